// smp-bench: the system-level benchmarks of smpctl (docs/performance.md). One subcommand per
// figure; each prints one JSON object on stdout (progress on stderr). scripts/bench-run.sh runs
// them all and collects the results.
//
//   smp-bench fullpath  --plan P [--runs N] [--no-records]
//   smp-bench link      --plan P --baud B [--runs N] [--granularity-us G]
//   smp-bench underruns --plan P [--time-scale S] [--runs N] [--hog]
//   smp-bench cpu       --plan P [--runs N] [--lease-ms L] [--no-records] [--protocol-minor M] [--interlocks] [--device PATH]
//   smp-bench wake-cost [--runs N] [--iterations I] [--lease-ms L]  (the cpu row's anchor)
//   smp-bench estop     [--trials N] [--hog] [--cyclictest] [--worst K] [--edge-unpinned]
//   smp-bench planload  --plan P [--runs N] [--smpctl PATH]
//   smp-bench sim       [--time-scale S] [--no-underrun-watch]  (a simulator in its own process, for `cpu`)
import Foundation

struct Arguments {
    private var values: [String: String] = [:]
    private var flags: Set<String> = []
    let command: String

    init(_ argv: [String]) throws {
        guard argv.count >= 2 else { throw BenchFailure("usage: smp-bench COMMAND [options] (see main.swift)") }
        command = argv[1]
        var index = 2
        while index < argv.count {
            let arg = argv[index]
            guard arg.hasPrefix("--") else { throw BenchFailure("unexpected argument \(arg)") }
            let name = String(arg.dropFirst(2))
            if index + 1 < argv.count, !argv[index + 1].hasPrefix("--") {
                values[name] = argv[index + 1]
                index += 2
            } else {
                flags.insert(name)
                index += 1
            }
        }
    }

    func string(_ name: String) throws -> String {
        guard let value = values[name] else { throw BenchFailure("--\(name) is required") }
        return value
    }
    func string(_ name: String, default fallback: String?) -> String? { values[name] ?? fallback }
    func int(_ name: String, default fallback: Int) throws -> Int {
        guard let text = values[name] else { return fallback }
        guard let value = Int(text) else { throw BenchFailure("--\(name) \(text) is not a whole number") }
        return value
    }
    func double(_ name: String, default fallback: Double) throws -> Double {
        guard let text = values[name] else { return fallback }
        guard let value = Double(text) else { throw BenchFailure("--\(name) \(text) is not a number") }
        return value
    }
    func flag(_ name: String) -> Bool { flags.contains(name) }
}

do {
    let args = try Arguments(CommandLine.arguments)
    switch args.command {
    case "fullpath": try FullPath.run(args)
    case "link": try LinkUtilisation.run(args)
    case "underruns": try Underruns.run(args)
    case "cpu": try HostCPU.run(args)
    case "wake-cost": try WakeCost.run(args)
    case "sim": try SimulatorProcess.run(args)
    case "estop": try EstopLatency.run(args)
    case "planload": try PlanLoad.run(args)
    default: throw BenchFailure("unknown command \(args.command)")
    }
} catch {
    note("failed: \(error)")
    exit(1)
}
