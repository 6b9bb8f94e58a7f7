// swift-tools-version:6.0
// libFuzzer targets that need the main package's modules and their dependencies (TOMLKit, swift-log):
// a package of its own so that `make test` never builds them. `make fuzz` builds it with
// `swift build --sanitize fuzzer --sanitize address` (libFuzzer supplies `main`: each target has
// one file defining `LLVMFuzzerTestOneInput` and no entry point). The frame decoder and firmware
// fuzzers (FrameDecoderFuzz.swift, FirmwareFuzz.swift) need no package: swiftc builds them.
import PackageDescription

let package = Package(
    name: "smpctl-fuzz",
    platforms: [.macOS(.v13)],
    dependencies: [
        // The main package by relative path; `name:` pins its identity whatever the directory is.
        .package(name: "smpctl", path: ".."),
    ],
    targets: [
        // The host link machine fed a device's frames, true and false, through a faulty wire.
        .executableTarget(
            name: "link-machine-fuzz",
            dependencies: [
                .product(name: "NeedleDriver", package: "smpctl"),
                .product(name: "DeviceSim", package: "smpctl"),
                .product(name: "FirmwareProtocol", package: "smpctl"),
            ],
            path: "LinkMachine"),
        // The machine-configuration loader fed arbitrary TOML text.
        .executableTarget(
            name: "machine-config-fuzz",
            dependencies: [.product(name: "SMPMachine", package: "smpctl")],
            path: "MachineConfig"),
        // The design reader (smp-design/1) fed arbitrary bytes.
        .executableTarget(
            name: "design-fuzz",
            dependencies: [.product(name: "SMPDesign", package: "smpctl"), .product(name: "SMPPlan", package: "smpctl")],
            path: "Design"),
    ])
