import Foundation
import XCTest

/// The host is killed with SIGKILL at random points of a session; `smpctl resume` finishes it.
/// The simulator, a separate process, keeps the ground truth: every plan dot must be injected
/// exactly once, or be explicitly marked with the operator's decision in the audit trail.
final class CrashResumeTests: XCTestCase {
    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    }

    func testSIGKILLAtRandomPointsThenResumeInjectsEveryDotExactlyOnce() throws {
        let trials = Int(ProcessInfo.processInfo.environment["SMP_CRASH_TRIALS"] ?? "") ?? 20
        var random = SplitMix(state: 0xC0A5_7E57)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let plan = try CLITests.planDotIDs("Examples/hairline.json")
        var killedMidway = 0
        // The longest lease the protocol allows: these trials run three processes at once on a
        // shared 2-core machine, and a starved host would (safely, but uselessly here) let the
        // applicator hold. The lease itself is tested elsewhere.
        let config = dir.appendingPathComponent("machine.toml").path
        try "[envelope]\nlease_ms = 250\n".write(toFile: config, atomically: true, encoding: .utf8)

        for trial in 0..<trials {
            let link = dir.appendingPathComponent("applicator-\(trial)").path
            let record = dir.appendingPathComponent("truth-\(trial).ndjson").path
            let db = dir.appendingPathComponent("records-\(trial).sqlite").path
            let sim = Process()
            sim.executableURL = CLITests.binary
            sim.arguments = ["sim", "--link", link, "--record", record, "--time-scale", "0.02", "--seed", "\(trial + 1)"]
            sim.environment = CLITests.environment
            sim.standardOutput = FileHandle.nullDevice
            sim.standardError = FileHandle.nullDevice
            try sim.run()
            defer {
                if sim.isRunning { sim.interrupt(); sim.waitUntilExit() }
            }
            let deadline = Date().addingTimeInterval(30)
            while !FileManager.default.fileExists(atPath: link) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }

            // Run, and kill it after a random time within the session (~1.5 s at this scale).
            let run = Process()
            run.executableURL = CLITests.binary
            run.arguments = ["run", "Examples/hairline.json", "--device", link, "--operator", "test-tech", "--yes", "--json", "--db", db, "--config", config]
            run.currentDirectoryURL = CLITests.repositoryRoot
            run.environment = CLITests.environment
            run.standardOutput = FileHandle.nullDevice
            run.standardError = FileHandle.nullDevice
            try run.run()
            let killAfter = 0.1 + random.unit() * 0.6
            Thread.sleep(forTimeInterval: killAfter)
            if run.isRunning {
                kill(run.processIdentifier, SIGKILL)
                killedMidway += 1
            }
            run.waitUntilExit()

            // Resume until complete (a kill before the session was recorded leaves nothing to resume).
            // Killed before it opened the records (a slow start on a loaded machine): no database,
            // which `sessions` reports as exit 66 with nothing on stdout.
            let sessions = try CLITests.smpctl(["sessions", "--json", "--db", db])
            let list = sessions.status == 66 ? []
                : try XCTUnwrap(JSONSerialization.jsonObject(with: Data(sessions.stdout.utf8)) as? [[String: Any]])
            if let session = list.first, let id = session["id"] as? Int, (session["done"] as? Int) != plan.count {
                let resumed = try CLITests.smpctl(["resume", "\(id)", "--device", link, "--operator", "test-tech", "--yes", "--json", "--db", db, "--config", config])
                XCTAssertEqual(resumed.status, 0, "trial \(trial) (killed after \(killAfter) s): \(resumed.stderr)\n\(resumed.stdout.suffix(600))")
            } else if list.isEmpty {
                let again = try CLITests.smpctl(["run", "Examples/hairline.json", "--device", link, "--operator", "test-tech", "--yes", "--json", "--db", db, "--config", config])
                XCTAssertEqual(again.status, 0, "trial \(trial): \(again.stderr)")
            }

            sim.interrupt()
            sim.waitUntilExit()
            let injected = try CLITests.recordedDotIDs(record)
            XCTAssertEqual(injected.count, Set(injected).count, "trial \(trial): a dot was injected twice")
            XCTAssertEqual(Set(injected), Set(plan), "trial \(trial): ground truth ≠ plan")
            let final = try CLITests.smpctl(["sessions", "--json", "--db", db])
            let finalList = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(final.stdout.utf8)) as? [[String: Any]])
            XCTAssertEqual(finalList.first?["state"] as? String, "completed", "trial \(trial)")
            XCTAssertEqual(finalList.first?["done"] as? Int, plan.count, "trial \(trial)")
        }
        XCTAssertGreaterThan(killedMidway, trials / 2, "most kills should land mid-session")
    }
}
