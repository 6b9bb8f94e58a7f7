// swift-tools-version:6.1
// smpctl's benchmarks: a package of their own so that `make test` (the main package) never builds
// them or fetches ordo-one/benchmark. Run them with `make bench` (scripts/bench-run.sh) or, for the
// codec micro-benchmarks alone, `swift package --disable-sandbox benchmark` in this directory.
// docs/performance.md has every figure, its goal and the command that measured it.
import PackageDescription

let package = Package(
    name: "smpctl-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        // The main package, by relative path. `name:` pins the identity the products below refer
        // to, whatever the checkout's directory is called (/work/main, a CI clone, a worktree).
        .package(name: "smpctl", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // package-benchmark suites: sources must live under Benchmarks/<target>/.
        .executableTarget(
            name: "Codec",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FirmwareProtocol", package: "smpctl"),
            ],
            path: "Benchmarks/Codec",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),

        // POSIX helpers Swift's Glibc module does not import (posix_openpt & co. need _XOPEN_SOURCE).
        .target(name: "CBenchSupport", path: "Sources/CBenchSupport"),

        // The system-level harness: full path, paced link, underruns, host CPU, e-stop latency,
        // plan load, peak RSS. One executable with a subcommand per figure; prints JSON.
        .executableTarget(
            name: "smp-bench",
            dependencies: [
                "CBenchSupport",
                .product(name: "FirmwareProtocol", package: "smpctl"),
                .product(name: "NeedleDriver", package: "smpctl"),
                .product(name: "SessionRunner", package: "smpctl"),
                .product(name: "DeviceSim", package: "smpctl"),
                .product(name: "SMPPlan", package: "smpctl"),
                .product(name: "SMPPlanReader", package: "smpctl"),
                .product(name: "SMPRecords", package: "smpctl"),
                .product(name: "SMPInterlocks", package: "smpctl"),
                .product(name: "SMPMachine", package: "smpctl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SMPBench"),
    ],
    swiftLanguageModes: [.v6]
)
