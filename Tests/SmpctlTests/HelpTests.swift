import Foundation
import NeedleDriver
import XCTest

@testable import smpctl

/// Help text in the style of swift-argument-parser's own tests (exact USAGE line, every option
/// listed), and the technician commands `devices`, `probe` and `preview` run as a technician would.
final class HelpTests: XCTestCase {
    /// The USAGE line and the OPTIONS section of a help text.
    struct Help {
        var usage: String
        var options: [String]
        /// The whole text, white space collapsed (argument-parser wraps the discussion).
        var prose: String

        init(_ text: String) {
            prose = text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            let lines = text.components(separatedBy: "\n")
            usage = lines.first { $0.hasPrefix("USAGE: ") } ?? ""
            var options: [String] = []
            var inOptions = false
            for line in lines {
                if line == "OPTIONS:" {
                    inOptions = true
                } else if inOptions && line.isEmpty {
                    break
                } else if inOptions, line.hasPrefix("  -") {
                    // "  -o, --output <file>   Where to…": the option's own words — flags and
                    // <values>. (A name that fills its column leaves one space, not two.)
                    let words = line.split(separator: " ").prefix { $0.hasPrefix("-") || $0.hasPrefix("<") }
                    options.append(words.joined(separator: " "))
                }
            }
            self.options = options
        }
    }

    func help(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> Help {
        let result = try CLITests.smpctl(arguments)
        XCTAssertEqual(result.status, 0, result.stderr, file: file, line: line)
        XCTAssertTrue(result.stderr.isEmpty, result.stderr, file: file, line: line)
        return Help(result.stdout)
    }

    /// `run` has so many options that argument-parser shortens its synopsis to `[<options>]`;
    /// the options are then checked one by one, in order.
    func testHelpRun() throws {
        let help = try help(["help", "run"])
        XCTAssertEqual(help.usage, "USAGE: smpctl run [<options>] <plan>")
        XCTAssertEqual(help.options, [
            "--device <device>", "--sim", "--time-scale <time-scale>", "--baud <N>", "--record <record>", "--seed <seed>",
            "--faults <faults>", "--line-faults <spec>", "--interlock-socket <path>", "--config <path>", "--db <path>",
            "--station", "--station-address <address>", "--station-port <port>", "--station-token <token>",
            "--operator <name>",
            "--yes", "--json", "--override-clinical <reason>", "-v, --verbose", "--version", "-h, --help",
        ])
        for promise in ["Ctrl-C once holds the session", "Ctrl-C again asks whether to end it",
                        "Ctrl-Z holds too, it does not suspend smpctl during a session",
                        "With --station the session is also shown and driven", "stays up after the end until Ctrl-C",
                        "SIGTERM, a closed terminal or closed output end the session held", "75 held or stopped",
                        "configuration named with --config must exist and load (66 missing or unreadable, 78 invalid)"] {
            XCTAssertTrue(help.prose.contains(promise), "run --help does not say “\(promise)”: \(help.prose)")
        }
    }

    /// Issue 21: the commands that meet a session another process runs, or records from a newer
    /// smpctl, say what they do then and with which exit status.
    func testRecordsCommandsDocumentARunningSessionAndANewerSchema() throws {
        for command in ["resume", "report", "export"] {
            let help = try help(["help", command])
            XCTAssertTrue(help.prose.contains("75") && help.prose.contains("running in another process")
                          || help.prose.contains("another process runs the session"),
                          "\(command) --help does not document exit 75 for a running session: \(help.prose)")
            XCTAssertTrue(help.prose.contains("78") && help.prose.contains("newer smpctl"),
                          "\(command) --help does not document exit 78 for a newer schema: \(help.prose)")
        }
    }

    func testHelpValidate() throws {
        let help = try help(["help", "validate"])
        XCTAssertEqual(help.usage, "USAGE: smpctl validate <plan> [--against <plan> ...] [--json]")
        XCTAssertEqual(help.options, ["--against <plan>", "--json", "--version", "-h, --help"])
    }

    func testDevicesHelp() throws {
        let help = try help(["devices", "--help"])
        XCTAssertEqual(help.usage, "USAGE: smpctl devices [--json]")
        XCTAssertEqual(help.options, ["--json", "--version", "-h, --help"])
    }

    func testPreviewHelp() throws {
        let help = try help(["preview", "--help"])
        XCTAssertEqual(help.usage, "USAGE: smpctl preview <plan> --output <file> [--density] [--density-cell-mm <mm>] [--fit-plan] [--after <plan> ...] [--design <design>]")
        XCTAssertEqual(help.options, [
            "-o, --output <file>", "--density", "--density-cell-mm <mm>", "--fit-plan", "--after <plan>",
            "--design <design>", "--version", "-h, --help",
        ])
    }

    func testDesignHelp() throws {
        let help = try help(["help", "design"])
        XCTAssertEqual(help.usage, "USAGE: smpctl design <design> --session <number> --output <file> [--after <plan-or-session> ...] "
                       + "[--seed <seed>] [--date <date>] [--config <path>] [--db <path>]")
        XCTAssertEqual(help.options, [
            "--session <number>", "-o, --output <file>", "--after <plan-or-session>", "--seed <seed>", "--date <date>",
            "--config <path>", "--db <path>", "--version", "-h, --help",
        ])
        for promise in ["session:ID", "byte for byte", "65 invalid design", "64 no such session"] {
            XCTAssertTrue(help.prose.contains(promise), "design --help does not say “\(promise)”: \(help.prose)")
        }
    }

    func testProbeHelp() throws {
        let help = try help(["probe", "--help"])
        XCTAssertEqual(help.usage, "USAGE: smpctl probe --device <device> [--json] [--verbose]")
        XCTAssertEqual(help.options, ["--device <device>", "--json", "-v, --verbose", "--version", "-h, --help"])
    }

    // MARK: - devices

    /// No applicator here (these machines have no USB): exit 69 (EX_UNAVAILABLE, as for `run` and
    /// `probe` with no device), so a script can test `smpctl devices >/dev/null`; the report says
    /// so, lists what was seen instead and what to check. With an applicator connected: exit 0.
    func testDevicesSaysWhatItFoundOrWhatToCheck() throws {
        let result = try CLITests.smpctl(["devices"])
        if result.status == 0 {
            XCTAssertTrue(result.stdout.contains("applicator found") || result.stdout.contains("applicators found"), result.stdout)
            XCTAssertTrue(result.stdout.contains("--device "), result.stdout)
            return
        }
        XCTAssertEqual(result.status, 69, result.stderr)
        XCTAssertTrue(result.stdout.hasPrefix("No applicator found"), result.stdout)
        XCTAssertTrue(result.stdout.contains("vendor 1209, product 5350"), result.stdout)
        XCTAssertTrue(result.stdout.contains("Other USB serial devices seen") || result.stdout.contains("No USB serial devices at all"),
                      result.stdout)
        for hint in ["USB cable", "70-smp-applicator.rules", "udevadm info", "dmesg"] {
            XCTAssertTrue(result.stdout.contains(hint), "no hint about \(hint):\n\(result.stdout)")
        }
    }

    func testDevicesJSONListsEveryUSBSerialDevice() throws {
        let result = try CLITests.smpctl(["devices", "--json"])
        let ports = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]], result.stdout)
        let applicators = ports.filter { $0["applicator"] as? Bool == true }
        XCTAssertEqual(result.status, applicators.isEmpty ? 69 : 0)
        for port in ports {
            for key in ["device", "serial", "vendor_id", "product_id", "by_id", "link", "applicator"] {
                XCTAssertNotNil(port[key], "\(key) missing in \(port)")
            }
        }
    }

    /// What a technician reads when the applicator is missing but other serial devices are
    /// plugged in (not reproducible on a machine without USB, so built from ports).
    func testTheNothingFoundReportListsTheOtherDevicesAndWhatToCheck() {
        let ftdi = DiscoveredPort(devicePath: "/dev/ttyUSB0", vendorID: "0403", productID: "6001", serial: "A10K1234",
                                  manufacturer: "FTDI", product: "FT232R USB UART",
                                  byIDPath: "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0")
        let report = Devices.nothingFoundReport(others: [ftdi], udevRunning: true)
        XCTAssertEqual(report.components(separatedBy: "\n").prefix(4), [
            "No applicator found (looked for USB serial devices with vendor 1209, product 5350).",
            "Other USB serial devices seen (not applicators):",
            "  /dev/ttyUSB0  USB 0403:6001  FTDI FT232R USB UART  serial A10K1234",
            "      by-id: /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0",
        ])
        XCTAssertFalse(report.contains("udev (systemd-udevd) is not running"))
        XCTAssertTrue(Devices.nothingFoundReport(others: [], udevRunning: false).contains("udev (systemd-udevd) is not running"))
    }

    func testTheFoundReportShowsThePathToUse() {
        let applicator = DiscoveredPort(devicePath: "/dev/ttyACM0", vendorID: "1209", productID: "5350", serial: "SMP0042",
                                        manufacturer: "Example", product: "SMP Applicator",
                                        applicatorLink: "/dev/smp/applicator-SMP0042", isApplicator: true)
        let report = Devices.foundReport([applicator])
        XCTAssertTrue(report.hasPrefix("1 applicator found:\n  /dev/ttyACM0  USB 1209:5350  Example SMP Applicator  serial SMP0042\n"),
                      report)
        XCTAssertTrue(report.hasSuffix("Use it with: smpctl run PLAN --device /dev/smp/applicator-SMP0042"), report)
        var unlinked = applicator
        unlinked.applicatorLink = nil
        XCTAssertTrue(Devices.foundReport([unlinked]).contains("udev rule 70-smp-applicator.rules is not installed"))
    }

    // MARK: - probe

    func testProbeReportsWhatTheSimulatedApplicatorSays() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-probe-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let link = dir.appendingPathComponent("applicator").path
        let sim = Process()
        sim.executableURL = CLITests.binary
        sim.arguments = ["sim", "--link", link, "--time-scale", "0"]
        sim.standardOutput = FileHandle.nullDevice
        sim.standardError = FileHandle.nullDevice
        try sim.run()
        defer {
            if sim.isRunning {
                sim.interrupt()
                sim.waitUntilExit()
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: link) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }

        let text = try CLITests.smpctl(["probe", "--device", link])
        XCTAssertEqual(text.status, 0, text.stderr)
        for row in ["firmware", "protocol", "capabilities", "queue capacity", "lease", "depth", "dwell", "travel",
                    "boot id", "dots done since boot"] {
            XCTAssertTrue(text.stdout.contains("\n  \(row) "), "no \(row) row:\n\(text.stdout)")
        }
        XCTAssertTrue(text.stdout.contains("smp-sim"), text.stdout)
        XCTAssertTrue(text.stdout.contains(" mm"), text.stdout)

        // The port was closed and released: a second probe opens it again.
        let json = try CLITests.smpctl(["probe", "--device", link, "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout)
        for key in ["firmware_id", "protocol_version", "capabilities", "queue_capacity", "lease_ms", "depth_min_mm",
                    "depth_max_mm", "dwell_min_ms", "dwell_max_ms", "travel_x_mm", "travel_y_mm", "boot_id", "done_count"] {
            XCTAssertNotNil(object[key], "\(key) missing")
        }
        XCTAssertEqual(object["device"] as? String, link)
    }

    func testProbeOfAMissingDeviceExits69AndSaysWhatToDo() throws {
        let result = try CLITests.smpctl(["probe", "--device", "/dev/ttyACM-not-here"])
        XCTAssertEqual(result.status, 69)
        XCTAssertTrue(result.stderr.contains("No device at /dev/ttyACM-not-here"), result.stderr)
        XCTAssertTrue(result.stderr.contains("smpctl devices"), result.stderr)
    }

    func testProbeOfSomethingThatIsNotASerialPortExits74() throws {
        let result = try CLITests.smpctl(["probe", "--device", "/dev/null"])
        XCTAssertEqual(result.status, 74)
        XCTAssertTrue(result.stderr.contains("is not a serial port"), result.stderr)
    }

    // MARK: - preview

    func testPreviewWritesAnSVGOfEveryDot() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-preview-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let output = dir.appendingPathComponent("hairline.svg").path
        let result = try CLITests.smpctl(["preview", "Examples/hairline.json", "-o", output, "--density"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("191 dots"), result.stdout)
        let svg = try String(contentsOfFile: output, encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<?xml"))
        XCTAssertEqual(svg.components(separatedBy: "<circle ").count - 1, 191)
        XCTAssertTrue(svg.contains(#"<g id="density""#))

        let stdout = try CLITests.smpctl(["preview", "Examples/hairline.json", "-o", "-", "--fit-plan"])
        XCTAssertEqual(stdout.status, 0, stdout.stderr)
        XCTAssertTrue(stdout.stdout.hasPrefix("<?xml"))
        XCTAssertTrue(stdout.stdout.hasSuffix("</svg>\n"))
    }

    func testPreviewRefusesAnInvalidPlanAndAMissingFile() throws {
        let invalid = try CLITests.smpctl(["preview", "Examples/invalid.json", "-o", "/tmp/should-not-exist.svg"])
        XCTAssertEqual(invalid.status, 65)
        XCTAssertTrue(invalid.stderr.contains("no picture was written"), invalid.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/should-not-exist.svg"))
        let missing = try CLITests.smpctl(["preview", "no-such-plan.json", "-o", "/tmp/should-not-exist.svg"])
        XCTAssertEqual(missing.status, 66)
        let noOutput = try CLITests.smpctl(["preview", "Examples/hairline.json"])
        XCTAssertEqual(noOutput.status, 64)
        XCTAssertTrue(noOutput.stderr.contains("--output"), noOutput.stderr)
    }

    // MARK: The documents say the same as the program (issue 19, item 4)

    static func collapsed(_ text: String) -> String { text.split(whereSeparator: \.isWhitespace).joined(separator: " ") }

    /// One list of exit statuses, from `ExitStatus.documented`: in `smpctl --help` (the man page
    /// smpctl(1) is generated from it), in `smpctl run --help`, and word for word in the guide.
    func testTheExitStatusListIsTheSameInTheHelpAndTheGuide() throws {
        let summary = ExitStatus.summary
        for arguments in [["--help"], ["help", "run"]] {
            let help = try CLITests.smpctl(arguments)
            XCTAssertTrue(Self.collapsed(help.stdout).contains(summary),
                          "smpctl \(arguments.joined(separator: " ")) does not give the exit-status list:\n\(help.stdout)")
        }
        let guide = try String(contentsOf: CLITests.repositoryRoot.appendingPathComponent("docs/operator-guide.md"),
                               encoding: .utf8)
        XCTAssertTrue(Self.collapsed(guide).contains(summary), "docs/operator-guide.md does not give:\n\(summary)")
        // Every status a session can end with is in the list.
        let listed = Set(ExitStatus.documented.map(\.status))
        for status: Int32 in [0, 64, 65, 66, 69, 71, 74, 75, 76, 77, 78] { XCTAssertTrue(listed.contains(status), "\(status)") }
    }

    /// The plan format states the clinical rules the program checks, not that they "come later".
    func testThePlanFormatDescribesTheClinicalRulesItChecks() throws {
        let text = try String(contentsOf: CLITests.repositoryRoot.appendingPathComponent("docs/plan-format.md"),
                              encoding: .utf8)
        XCTAssertFalse(text.contains("come later"), "docs/plan-format.md still defers the clinical rules")
        XCTAssertTrue(text.contains("## Clinical timing"))
        XCTAssertTrue(text.contains("clinicalTooSoonAfterTransplant"))
    }
}
