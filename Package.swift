// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "smpctl",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "smpctl", targets: ["smpctl"]),
        .library(name: "FirmwareProtocol", targets: ["FirmwareProtocol"]),
        .library(name: "NeedleDriver", targets: ["NeedleDriver"]),
        .library(name: "SessionRunner", targets: ["SessionRunner"]),
        .library(name: "DeviceSim", targets: ["DeviceSim"]),
        // For Fuzz/Package.swift and Benchmarks/Package.swift (packages of their own).
        .library(name: "SMPPlan", targets: ["SMPPlan"]),
        .library(name: "SMPPlanReader", targets: ["SMPPlanReader"]),
        .library(name: "SMPRecords", targets: ["SMPRecords"]),
        .library(name: "SMPInterlocks", targets: ["SMPInterlocks"]),
        .library(name: "SMPMachine", targets: ["SMPMachine"]),
        .library(name: "SMPDesign", targets: ["SMPDesign"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/vapor/console-kit", from: "4.16.2"),
        // The technician station's local web console (`smpctl station`): HTTP and WebSocket.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
    ],
    targets: [
        // Pure codec: no I/O, no Foundation, shared by host and simulator.
        .target(name: "FirmwareProtocol", swiftSettings: strict),
        // The applicator's firmware as a pure state machine, Embedded-Swift-clean (`make
        // check-embedded`): wrapped by DeviceSim here, the microcontroller image later.
        .target(name: "FirmwareCore", dependencies: ["FirmwareProtocol"], swiftSettings: strict),

        // C libraries reached through system-library targets; the module maps include the
        // headers by name so pkg-config's include path decides which installed version is used.
        .systemLibrary(
            name: "CUdev", pkgConfig: "libudev",
            providers: [.apt(["libudev-dev"])]),
        .systemLibrary(
            name: "CGPIOD", pkgConfig: "libgpiod",
            providers: [.apt(["libgpiod-dev"])]),
        // The one C shim: termios/pty/ioctl helpers Swift cannot import cleanly, and libgpiod v1/v2.
        .target(name: "CSMPShim", dependencies: ["CGPIOD"]),
        // The one syscall layer (EINTR retried, typed errnos, a mock hook for tests), used by the
        // driver, the simulator and the tests.
        .target(
            name: "SMPSystem",
            dependencies: ["CSMPShim", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),

        .target(
            name: "NeedleDriver",
            dependencies: [
                "FirmwareProtocol", "SMPSystem", "CUdev", "CSMPShim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict),
        // The plan: its model, the safety envelope, validation, pacing and spacing rules. Pure.
        .target(name: "SMPPlan", dependencies: ["FirmwareProtocol"], swiftSettings: strict),
        // Reading smp-plan/1 JSON files into a validated `Plan`, and the hash of the bytes read.
        .target(
            name: "SMPPlanReader",
            dependencies: ["SMPPlan", "SMPSystem", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        // Plan design (`smpctl design`): smp-design/1 files, Poisson-disk placement around
        // earlier sessions' dots, the plan written. Pure: no device, no records, no TOML.
        .target(name: "SMPDesign", dependencies: ["SMPPlan", "SMPPlanReader"], swiftSettings: strict),
        // The interlocks together: the pure interlock machine, its runtime and the GPIO lines.
        .target(
            name: "SMPInterlocks",
            dependencies: [
                "SMPPlan", "SMPSystem", "CSMPShim", "FirmwareProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict),
        // The session only: claims, accounting, pacing, device-status policy. Writes its record
        // through a port (`SessionRecorder`) the records module implements.
        .target(
            name: "SessionRunner",
            dependencies: [
                "SMPPlan", "SMPInterlocks", "NeedleDriver", "SMPSystem", "FirmwareProtocol",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // The treatment records: SQLite through GRDB, the group-commit journal, resume resolution.
        .target(
            name: "SMPRecords",
            dependencies: [
                "SessionRunner", "SMPPlan", "SMPSystem", "FirmwareProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, for the per-row updates of a group commit (RecordStore.apply).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            swiftSettings: strict),
        // The machine configuration file (TOML).
        .target(
            name: "SMPMachine",
            dependencies: [
                "SMPPlan", "SMPInterlocks", "SMPSystem", "NeedleDriver", "FirmwareProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict),
        // SVG and HTML: the plan preview and the session report, one XML writer.
        .target(name: "SMPRender", dependencies: ["SMPPlan", "SMPRecords", "SessionRunner"], swiftSettings: strict),
        // The technician station: a local web console (HTTP + WebSocket) for a running session.
        // Sees the session only through its events; its page's commands go back through the CLI.
        .target(
            name: "SMPStation",
            dependencies: [
                "SessionRunner", "SMPPlan", "SMPInterlocks", "SMPSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
            ],
            swiftSettings: strict),
        .target(
            name: "DeviceSim",
            dependencies: [
                "FirmwareCore", "FirmwareProtocol", "SMPSystem",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "smpctl",
            dependencies: [
                "SessionRunner", "SMPPlan", "SMPPlanReader", "SMPInterlocks", "SMPRecords", "SMPMachine",
                "SMPRender", "SMPDesign", "SMPSystem", "NeedleDriver", "DeviceSim", "SMPStation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                // The live progress line at a terminal (ActivityBar, styled ConsoleText, erase).
                .product(name: "ConsoleKitTerminal", package: "console-kit"),
            ],
            swiftSettings: strict),

        .testTarget(name: "FirmwareProtocolTests", dependencies: ["FirmwareProtocol"], swiftSettings: strict),
        .testTarget(name: "SMPSystemTests", dependencies: ["SMPSystem"], swiftSettings: strict),
        .testTarget(
            name: "NeedleDriverTests", dependencies: ["NeedleDriver", "DeviceSim", "SMPSystem"], swiftSettings: strict),
        .testTarget(name: "SMPPlanTests", dependencies: ["SMPPlan", "SMPPlanReader", "FirmwareCore"], swiftSettings: strict),
        .testTarget(name: "SMPDesignTests", dependencies: ["SMPDesign", "SMPPlan", "SMPPlanReader"], swiftSettings: strict),
        .testTarget(name: "SMPMachineTests", dependencies: ["SMPMachine", "NeedleDriver"], swiftSettings: strict),
        .testTarget(
            name: "SMPInterlocksTests",
            dependencies: [
                "SMPInterlocks", "SMPMachine", "SMPSystem", "CSMPShim",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict),
        .testTarget(name: "SMPRenderTests", dependencies: ["SMPRender", "SMPRecords", "SessionRunner", "SMPPlanReader"], swiftSettings: strict),
        .testTarget(
            name: "SessionRunnerTests",
            dependencies: [
                "SessionRunner", "SMPPlan", "SMPPlanReader", "SMPInterlocks", "SMPRecords", "SMPMachine", "SMPRender",
                "DeviceSim",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "SMPStationTests",
            dependencies: ["SMPStation", "SessionRunner", "SMPPlan", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .testTarget(
            name: "DeviceSimTests", dependencies: ["DeviceSim", "FirmwareCore", "FirmwareProtocol", "SMPSystem"],
            swiftSettings: strict),
        .testTarget(
            name: "SmpctlTests",
            dependencies: ["smpctl", "SMPSystem", "SMPRecords", .product(name: "ConsoleKitTerminal", package: "console-kit")],
            swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
