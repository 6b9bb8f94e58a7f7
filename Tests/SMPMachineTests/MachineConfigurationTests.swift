import FirmwareProtocol
import Foundation
import NeedleDriver
import XCTest

@testable import SMPPlan
@testable import SMPInterlocks
@testable import SMPMachine

/// The machine configuration: the example file, the built-in defaults, and every kind of bad
/// field rejected with a message naming the file, the key path, the value and the limit.
final class MachineConfigurationTests: XCTestCase {
    private static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A valid file with one e-stop and one pedal, to which a test appends or in which it replaces.
    private static let minimal = """
        [[interlock]]
        name = "estop"
        role = "estop"
        chip = "gpiochip0"
        line = 17
        active_low = false
        bias = "pull-up"

        [[interlock]]
        name = "pedal"
        role = "pedal"
        chip = "gpiochip0"
        line = 27
        active_low = true
        bias = "pull-up"
        debounce_ms = 20

        """

    private func load(_ text: String) throws(MachineConfigurationError) -> MachineConfiguration {
        try MachineConfigurationLoader.load(text: text, sourceName: "machine.toml")
    }

    /// The single issue `text` produces; fails unless there is exactly one.
    private func issue(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> MachineConfigurationIssue? {
        do {
            _ = try load(text)
            XCTFail("accepted", file: file, line: line)
            return nil
        } catch {
            XCTAssertEqual(error.issues.count, 1, "\(error)", file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix("machine.toml: "), error.description, file: file, line: line)
            return error.issues.first
        }
    }

    private func assertIssue(
        _ text: String, _ code: MachineConfigurationIssue.Code, keyPath: String, mentions: [String] = [],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        guard let issue = issue(text, file: file, line: line) else { return }
        XCTAssertEqual(issue.code, code, issue.message, file: file, line: line)
        XCTAssertEqual(issue.keyPath, keyPath, issue.message, file: file, line: line)
        XCTAssertTrue(issue.message.contains(keyPath), "message does not name the key: \(issue.message)", file: file, line: line)
        for word in mentions {
            XCTAssertTrue(issue.message.contains(word), "\(issue.message) does not mention \(word)", file: file, line: line)
        }
    }

    // MARK: - Valid files

    func testTheExampleFileLoads() throws {
        let path = Self.packageRoot.appendingPathComponent("Examples/machine.toml").path
        let configuration = try MachineConfigurationLoader.load(path: path)
        XCTAssertEqual(configuration.sourcePath, path)
        XCTAssertEqual(configuration.applicator, .match(ApplicatorMatch(vendorID: "1209", productID: "5350", serial: "A1B2C3")))
        XCTAssertEqual(configuration.envelope.depthMicrometres, 300...1_200)
        XCTAssertEqual(configuration.envelope.dwellMicroseconds, 20_000...300_000)
        XCTAssertEqual(configuration.envelope.travelXMicrometres, 120_000)
        XCTAssertEqual(configuration.envelope.travelYMicrometres, 100_000)
        XCTAssertEqual(configuration.envelope.minimumSpacingMicrometres, 600)
        XCTAssertEqual(configuration.envelope.maximumDotsPerSecond, 12)
        XCTAssertEqual(configuration.leaseMilliseconds, 100)
        XCTAssertEqual(configuration.inputs.map(\.role), [.estop, .pedal, .contact, .cartridge])
        XCTAssertEqual(configuration.inputs[0], InterlockInput(name: "estop", role: .estop, chip: "gpiochip0", lineOffset: 17,
                                                              activeLow: false, bias: .pullUp, debounce: .milliseconds(10)))
        XCTAssertEqual(configuration.inputs[3].debounce, MachineConfiguration.defaultDebounce)
        XCTAssertEqual(configuration.outputs.map(\.role), [.needlePower, .lamp])
        XCTAssertEqual(configuration.needlePowerOutput?.lineOffset, 24)
        XCTAssertFalse(configuration.isDeveloperMode)
    }

    func testBuiltInIsDeveloperModeWithTheBuiltInEnvelope() throws {
        let configuration = try load("")
        XCTAssertTrue(configuration.isDeveloperMode)
        XCTAssertEqual(configuration.envelope, .builtIn)
        XCTAssertEqual(configuration.leaseMilliseconds, 100)
        XCTAssertEqual(configuration.applicator, .match(.default))
        XCTAssertTrue(configuration.outputs.isEmpty)
        XCTAssertTrue(MachineConfiguration.builtIn.isDeveloperMode)
        XCTAssertTrue(configuration.describe(deviceLimits: nil).contains("SIMULATOR/DEVELOPER MODE"))
    }

    func testLoadIfPresentFallsBackToBuiltInOnlyWhenThereIsNoFile() throws {
        let missing = NSTemporaryDirectory() + "/smpctl-no-such-\(UUID().uuidString).toml"
        XCTAssertTrue(try MachineConfigurationLoader.loadIfPresent(path: missing).isDeveloperMode)
        XCTAssertThrowsError(try MachineConfigurationLoader.load(path: missing)) { error in
            let error = error as? MachineConfigurationError
            XCTAssertEqual(error?.issues.first?.code, .fileUnreadable)
            XCTAssertEqual(error?.isUnreadable, true)
            XCTAssertTrue(error?.description.contains("No such file or directory") == true, "\(String(describing: error))")
            XCTAssertTrue(error?.description.hasPrefix(missing) == true)
        }
        // A file that exists but is wrong is never replaced by the defaults.
        let bad = NSTemporaryDirectory() + "/smpctl-bad-\(UUID().uuidString).toml"
        try "[envelope]\ndepth_max_mm = 3\n".write(toFile: bad, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: bad) }
        XCTAssertThrowsError(try MachineConfigurationLoader.loadIfPresent(path: bad)) { error in
            XCTAssertEqual((error as? MachineConfigurationError)?.isUnreadable, false)
        }
    }

    func testDirectoryIsNotAFile() {
        XCTAssertThrowsError(try MachineConfigurationLoader.load(path: NSTemporaryDirectory())) { error in
            XCTAssertTrue("\(error)".contains("it is a directory"), "\(error)")
        }
    }

    /// A FIFO would block a reader forever and an oversized file would fill the memory: both are
    /// refused before they are read (the same `RegularFile` reader as plans).
    func testAFIFOAndAnOversizedFileAreRefusedWithoutBeingRead() throws {
        let directory = NSTemporaryDirectory() + "smpctl-machine-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = directory + "/machine.toml"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try MachineConfigurationLoader.load(path: fifo)) { error in
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
        let large = directory + "/large.toml"
        XCTAssertTrue(FileManager.default.createFile(atPath: large, contents: nil))
        XCTAssertEqual(truncate(large, off_t(MachineConfigurationLoader.maximumFileBytes + 1)), 0)
        XCTAssertThrowsError(try MachineConfigurationLoader.load(path: large)) { error in
            XCTAssertTrue("\(error)".contains("more than the \(MachineConfigurationLoader.maximumFileBytes) allowed"), "\(error)")
        }
    }

    func testDefaultPath() {
        XCTAssertEqual(MachineConfigurationLoader.defaultPath, "/etc/smpctl/machine.toml")
    }

    func testApplicatorDevicePath() throws {
        let configuration = try load("[applicator]\ndevice = \"/dev/ttyACM3\"\n")
        XCTAssertEqual(configuration.applicator, .device(path: "/dev/ttyACM3"))
    }

    func testUSBIdsAsIntegersOrWithPrefix() throws {
        let configuration = try load("[applicator.match]\nvendor_id = 0x1209\nproduct_id = \"0X5350\"\n")
        XCTAssertEqual(configuration.applicator, .match(ApplicatorMatch(vendorID: "1209", productID: "5350")))
    }

    func testNarrowingRoundsInwardsToWholeMicrometres() throws {
        let configuration = try load("""
            [envelope]
            depth_min_mm = 0.2001
            depth_max_mm = 1.2345
            dwell_min_ms = 25
            dwell_max_ms = 499.9996
            travel_x_mm = 99.9999
            min_spacing_mm = 0.5001
            """)
        XCTAssertEqual(configuration.envelope.depthMicrometres, 201...1_234)
        XCTAssertEqual(configuration.envelope.dwellMicroseconds, 25_000...499_999)
        XCTAssertEqual(configuration.envelope.travelXMicrometres, 99_999)
        XCTAssertEqual(configuration.envelope.travelYMicrometres, 150_000, "not given: built-in")
        XCTAssertEqual(configuration.envelope.minimumSpacingMicrometres, 501)
    }

    func testValuesExactlyAtTheBuiltInLimitsAreAccepted() throws {
        let configuration = try load("""
            [envelope]
            depth_min_mm = 0.2
            depth_max_mm = 1.5
            dwell_min_ms = 20
            dwell_max_ms = 500
            travel_x_mm = 150
            travel_y_mm = 150.0
            min_spacing_mm = 0.5
            max_dots_per_second = 20
            lease_ms = 250
            """)
        XCTAssertEqual(configuration.envelope, .builtIn)
        XCTAssertEqual(configuration.leaseMilliseconds, 250)
    }

    func testGPIOLinesFollowTheRoles() throws {
        let configuration = try load(Self.minimal)
        let lines = configuration.interlockWiring.gpioInputs
        XCTAssertEqual(lines[0].immediateLevel, .active, "e-stop pressed is never delayed")
        XCTAssertEqual(lines[1].immediateLevel, .inactive, "pedal released is never delayed")
        XCTAssertEqual(lines[1].debounce, .milliseconds(20))
        XCTAssertEqual(lines[1].chipPath, "/dev/gpiochip0")
    }

    // MARK: - Envelope: only narrower than the built-in one

    func testWiderEnvelopeValuesAreErrorsNamingTheBuiltInLimit() {
        let cases: [(String, String, [String])] = [
            ("depth_max_mm = 2.0", "envelope.depth_max_mm", ["= 2", "1.5 mm", "built-in", "narrow"]),
            ("depth_min_mm = 0.1", "envelope.depth_min_mm", ["= 0.1", "0.2 mm", "built-in"]),
            ("dwell_max_ms = 600", "envelope.dwell_max_ms", ["= 600", "500 ms"]),
            ("dwell_min_ms = 10", "envelope.dwell_min_ms", ["= 10", "20 ms"]),
            ("travel_x_mm = 200", "envelope.travel_x_mm", ["= 200", "150 mm"]),
            ("travel_y_mm = 150.001", "envelope.travel_y_mm", ["= 150.001", "150 mm"]),
            ("min_spacing_mm = 0.4", "envelope.min_spacing_mm", ["= 0.4", "0.5 mm"]),
            ("max_dots_per_second = 25", "envelope.max_dots_per_second", ["= 25", "20"]),
        ]
        for (line, keyPath, mentions) in cases {
            assertIssue("[envelope]\n\(line)\n", .widensBuiltIn, keyPath: keyPath, mentions: mentions)
        }
    }

    func testEnvelopeValuesOutOfTheirOwnRange() {
        assertIssue("[envelope]\nmax_dots_per_second = 0\n", .outOfRange, keyPath: "envelope.max_dots_per_second",
                    mentions: ["= 0", "0.0152590219"])
        assertIssue("[envelope]\ntravel_x_mm = 0\n", .outOfRange, keyPath: "envelope.travel_x_mm", mentions: ["= 0"])
        assertIssue("[envelope]\ndepth_min_mm = 1.6\n", .outOfRange, keyPath: "envelope.depth_min_mm", mentions: ["1.5 mm"])
        assertIssue("[envelope]\ndepth_max_mm = 0.1\n", .outOfRange, keyPath: "envelope.depth_max_mm", mentions: ["0.2 mm"])
        assertIssue("[envelope]\nlease_ms = 300\n", .outOfRange, keyPath: "envelope.lease_ms", mentions: ["= 300", "250 ms"])
        assertIssue("[envelope]\nlease_ms = 10\n", .outOfRange, keyPath: "envelope.lease_ms", mentions: ["= 10", "20"])
        assertIssue("[envelope]\nlease_ms = 100.5\n", .wrongType, keyPath: "envelope.lease_ms",
                    mentions: ["100.5", "whole number"])
        assertIssue("[envelope]\ndepth_max_mm = \"1.2\"\n", .wrongType, keyPath: "envelope.depth_max_mm",
                    mentions: ["\"1.2\"", "a string", "a number"])
        assertIssue("[envelope]\ndepth_max_mm = nan\n", .outOfRange, keyPath: "envelope.depth_max_mm", mentions: ["finite", "0.2 … 1.5 mm"])
    }

    /// PACE carries the interval between skin entries as u16 milliseconds: a rate slower than one
    /// dot per 65.535 s cannot be sent, and must be refused at load, never clamped to a faster pace.
    func testDotRateSlowerThanPACECanCarryIsRefusedAtLoad() throws {
        assertIssue("[envelope]\nmax_dots_per_second = 0.01\n", .outOfRange, keyPath: "envelope.max_dots_per_second",
                    mentions: ["= 0.01", "0.0152590219", "65.535 s", "PACE"])
        assertIssue("[envelope]\nmax_dots_per_second = 1e-15\n", .outOfRange, keyPath: "envelope.max_dots_per_second",
                    mentions: ["0.0152590219"])
        // The documented lower limit, as written in the docs and as the exact quotient, loads and converts.
        for written in ["0.0152590219", "0.015259021896696421"] {
            let envelope = try load("[envelope]\nmax_dots_per_second = \(written)\n").envelope
            XCTAssertEqual(try DotPace.paceMilliseconds(envelope), 65_535, written)
        }
    }

    /// Every numeric key of the file, at extreme values: each either loads and lies inside its
    /// documented range (docs/machine-config.md) — and then converts to what the protocol sends
    /// without trapping — or is refused with an error naming the key path, the value and the limit.
    func testEveryNumericKeyAtExtremeValuesLoadsInRangeOrIsRefusedClearly() throws {
        struct Key {
            var path: String
            var text: (String) -> String
            var range: ClosedRange<Double>
            var read: (MachineConfiguration) -> Double
        }
        func envelopeKey(_ key: String, _ range: ClosedRange<Double>, _ read: @escaping (SafetyEnvelope) -> Double) -> Key {
            Key(path: "envelope.\(key)", text: { "[envelope]\n\(key) = \($0)\n" }, range: range, read: { read($0.envelope) })
        }
        func usb(_ configuration: MachineConfiguration, _ id: KeyPath<ApplicatorMatch, String>) -> Double {
            guard case .match(let match) = configuration.applicator else { return -1 }
            return Double(Int(match[keyPath: id], radix: 16) ?? -1)
        }
        let interlock = { (line: String, debounce: String) in
            "[[interlock]]\nname = \"e\"\nrole = \"estop\"\nchip = \"gpiochip0\"\nline = \(line)\nactive_low = false\n"
                + "bias = \"pull-up\"\ndebounce_ms = \(debounce)\n"
        }
        let keys: [Key] = [
            Key(path: "applicator.match.vendor_id", text: { "[applicator.match]\nvendor_id = \($0)\nproduct_id = 1\n" },
                range: 0...0xFFFF, read: { usb($0, \.vendorID) }),
            Key(path: "applicator.match.product_id", text: { "[applicator.match]\nvendor_id = 1\nproduct_id = \($0)\n" },
                range: 0...0xFFFF, read: { usb($0, \.productID) }),
            envelopeKey("depth_min_mm", 0.2...1.5) { Double($0.depthMicrometres.lowerBound) / 1000 },
            envelopeKey("depth_max_mm", 0.2...1.5) { Double($0.depthMicrometres.upperBound) / 1000 },
            envelopeKey("dwell_min_ms", 20...500) { Double($0.dwellMicroseconds.lowerBound) / 1000 },
            envelopeKey("dwell_max_ms", 20...500) { Double($0.dwellMicroseconds.upperBound) / 1000 },
            envelopeKey("travel_x_mm", 0.001...150) { Double($0.travelXMicrometres) / 1000 },
            envelopeKey("travel_y_mm", 0.001...150) { Double($0.travelYMicrometres) / 1000 },
            envelopeKey("min_spacing_mm", 0.5...100) { Double($0.minimumSpacingMicrometres) / 1000 },
            envelopeKey("max_dots_per_second", (1000 / 65_535)...20) { $0.maximumDotsPerSecond },
            Key(path: "envelope.lease_ms", text: { "[envelope]\nlease_ms = \($0)\n" }, range: 20...250,
                read: { Double($0.leaseMilliseconds) }),
            Key(path: "host.realtime_priority", text: { "[host]\nrealtime_priority = \($0)\n" }, range: 0...99,
                read: { Double($0.realtimePriority ?? -1) }),
            Key(path: "interlock[0].line", text: { interlock($0, "10") }, range: 0...65_535,
                read: { Double($0.inputs.first?.lineOffset ?? UInt32.max) }),
            Key(path: "interlock[0].debounce_ms", text: { interlock("17", $0) }, range: 0...100,
                read: { Double(($0.inputs.first?.debounce ?? .seconds(-1)) / .microseconds(1)) / 1000 }),
            Key(path: "output[0].line",
                text: { "[[output]]\nname = \"p\"\nrole = \"lamp\"\nchip = \"gpiochip0\"\nline = \($0)\nactive_low = false\n" },
                range: 0...65_535, read: { Double($0.outputs.first?.lineOffset ?? UInt32.max) }),
        ]
        let values = ["0", "-0.0", "-1", "1", "1e-300", "-1e-300", "1e-15", "0.01", "0.5", "12", "100", "65535", "65536",
                      "1e300", "-1e300", "nan", "+inf", "-inf", "9223372036854775807", "-9223372036854775808",
                      "99999999999999999999"]
        for key in keys {
            for value in values {
                let text = key.text(value)
                let context = "\(key.path) = \(value)"
                do {
                    let configuration = try load(text)
                    let loaded = key.read(configuration)
                    guard key.range.contains(loaded) else {
                        XCTFail("\(context) loaded as \(loaded), outside the documented \(key.range)")
                        continue
                    }
                    // What `run` converts: the pace (PACE and the monitor) and the lease.
                    XCTAssertNoThrow(try DotPace.paceMilliseconds(configuration.envelope), context)
                    XCTAssertNoThrow(try DotPace.minimumIntervalMicroseconds(configuration.envelope), context)
                } catch {
                    XCTAssertFalse(error.isUnreadable, "\(context): \(error)")
                    XCTAssertTrue(error.description.hasPrefix("machine.toml: "), "\(context): \(error)")
                    guard let issue = error.issues.first, error.issues.count == 1 else {
                        XCTFail("\(context): \(error.issues.count) issues: \(error)")
                        continue
                    }
                    if issue.code == .syntax {  // an integer TOML cannot hold: the line is named
                        XCTAssertTrue(issue.message.contains("line "), "\(context): \(issue.message)")
                        continue
                    }
                    XCTAssertEqual(issue.keyPath, key.path, "\(context): \(issue.message)")
                    XCTAssertTrue(issue.message.hasPrefix(key.path), "\(context): \(issue.message)")
                    if let shown = issue.value {
                        XCTAssertTrue(issue.message.contains(shown), "\(context): \(issue.message)")
                    } else {
                        XCTFail("\(context): no value in \(issue.message)")
                    }
                    if issue.code != .wrongType {
                        XCTAssertFalse(issue.limit?.isEmpty ?? true, "\(context): no limit in \(issue.message)")
                    } else {
                        XCTAssertTrue(issue.message.contains("expected"), "\(context): \(issue.message)")
                    }
                }
            }
        }
    }

    /// Strings that end up as C strings (a device path, a chip path, a USB serial) can hold
    /// neither a NUL nor other control characters, and are of bounded length.
    func testPathsAndSerialsRefuseControlCharactersAndOverlongValues() {
        assertIssue("[applicator]\ndevice = \"/dev/ttyACM0\\u0000x\"\n", .invalidValue, keyPath: "applicator.device",
                    mentions: ["control character"])
        assertIssue("[applicator]\ndevice = \"/dev/\(String(repeating: "a", count: 5000))\"\n", .invalidValue,
                    keyPath: "applicator.device", mentions: ["4095"])
        assertIssue("[applicator.match]\nvendor_id = 1\nproduct_id = 1\nserial = \"A\\tB\"\n", .invalidValue,
                    keyPath: "applicator.match.serial", mentions: ["control character"])
        assertIssue("[applicator.match]\nvendor_id = 1\nproduct_id = 1\nserial = \"\(String(repeating: "S", count: 127))\"\n",
                    .invalidValue, keyPath: "applicator.match.serial", mentions: ["126"])
        let chip = Self.minimal.replacingOccurrences(of: "chip = \"gpiochip0\"\nline = 17",
                                                     with: "chip = \"/dev/gpiochip0\\u0000\"\nline = 17")
        assertIssue(chip, .invalidValue, keyPath: "interlock[0].chip", mentions: ["control character"])
    }

    /// toml++ 3.4.0 (in TOMLKit) aborted the process on these (an assertion in parse_key, live in
    /// release builds): found by `make fuzz` (machine-config-fuzz). Each is now a syntax error with
    /// its line and column; a header's look-alikes inside strings, comments and values still load.
    private func assertSyntax(_ text: String, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        guard let issue = issue(text, file: file, line: line) else { return }
        XCTAssertEqual(issue.code, .syntax, issue.message, file: file, line: line)
        for word in mentions {
            XCTAssertTrue(issue.message.contains(word), "\(issue.message) does not mention \(word)", file: file, line: line)
        }
    }

    /// `a = [ } ]` aborted smpctl (SIGABRT, exit 134): toml++ hands the "}" to `parse_value()`,
    /// which asserts it is no value terminator (found by the machine-file fuzzer, fifth stop).
    func testAClosingBraceWhereAnArrayExpectsAValueIsASyntaxErrorNotACrash() throws {
        for (text, line, column) in [
            ("a = [ } ]", 1, 7), ("a = [1, }]", 1, 9), ("a = [\n  # note\n  }\n]", 3, 3),
            ("a = [[ } ]]", 1, 8), ("a = [ { b = 1 }, } ]", 1, 18), ("a = { b = [ } }", 1, 13),
            ("[envelope]\nlease_ms = [\n1,\n}", 4, 1),
        ] {
            assertSyntax(text, mentions: ["line \(line), column \(column)", "an array needs a value or \"]\" here",
                                          "found \"}\""])
        }
        // Line breaks toml++ counts as whitespace and TOML does not (found by the fuzzer too).
        for text in ["a = [\u{2028}]", "a = [1,\u{2029}]", "a = [ # note\n\u{85}]"] {
            assertSyntax(text, mentions: ["an array needs a value or \"]\" here"])
        }
        // Not a trap: toml++ refuses these itself (a "}" after a value, an inline table's own
        // "}"), or reads them ("}" in strings and comments).
        for text in ["a = [ 1 } ]", "a = { b = 1 }\n", "a = [ { } ]\n", "a = [ \"}\", '}', # }\n]\n"] {
            XCTAssertNil(MachineConfigurationLoader.tomlppTrap(in: text), text)
        }
        assertSyntax("a = [ 1 } ]", mentions: ["line 1"])
    }

    /// `a = 1979-05-27 1 ` aborted smpctl: toml++ reads on after a date and a space for a
    /// date-time and asserts that what follows one digit is no terminator (fuzzer, fifth stop).
    func testADateWithASpaceAndOneDigitIsASyntaxErrorNotACrash() throws {
        for (text, line, column, found) in [
            ("a = 1979-05-27 1 ", 1, 5, "1979-05-27 1"), ("a = 1979-05-27 1#", 1, 5, "1979-05-27 1"),
            ("a = [1979-05-27 1]", 1, 6, "1979-05-27 1"), ("a = 1979-05-27 1\n", 1, 5, "1979-05-27 1"),
            ("a = 1979-05-27 1,", 1, 5, "1979-05-27 1"), ("\nb = 6664-12-m= 6# 2", 2, 5, "6664-12-m= 6"),
            ("a = 1_979-05-27 1 ", 1, 5, "1_979-05-27 1"),
            // toml++'s whitespace, not Unicode's: U+FEFF after the digit (fuzzer, fifth stop).
            ("a = 1979-05-27 1\u{FEFF}", 1, 5, "1979-05-27 1"), ("a = 1979-05-27 1\u{200B}", 1, 5, "1979-05-27 1"),
        ] {
            assertSyntax(text, mentions: ["line \(line), column \(column)", "a date with a space after it needs a time",
                                          "found \"\(found)\""])
        }
        // Valid dates and date-times, and what toml++ refuses itself: not ours to catch.
        for text in ["a = 1979-05-27\n", "a = 1979-05-27 07:32:00\n", "a = 1979-05-27 # a date\n",
                     "a = [1979-05-27, 1]\n", "a = 1979-05-27 1", "a = \"1979-05-27 1 \"\n", "# 1979-05-27 1 \n"] {
            XCTAssertNil(MachineConfigurationLoader.tomlppTrap(in: text), text)
        }
    }

    func testATableHeaderWithoutAKeyIsASyntaxErrorNotACrash() throws {
        for (text, line, column, found) in [
            ("[)", 1, 2, "\")\""), ("[[)]]", 1, 3, "\")\""), ("\n  [ .a]", 2, 5, "\".\""), ("[[[a]]]", 1, 3, "\"[\""),
            ("[\n", 1, 2, "\"\\n\""), ("[\r\n", 1, 2, "\"\\r\""), ("[envelope]\n[#x]", 2, 2, "\"#\""),
            // Behind a byte-order mark, which toml++ skips (found by the fuzzer, fifth stop).
            ("\u{FEFF}[[[a]]]", 1, 3, "\"[\""), ("\u{FEFF}[)", 1, 2, "\")\""),
        ] {
            assertSyntax(text, mentions: ["line \(line), column \(column)", "found \(found)"])
        }
        let lookAlikes = """
            # [) in a comment
            [host] # [) after a header
            realtime_priority = 0
            [applicator.match]
            vendor_id = 0x1209
            product_id = 0x0001
            serial = "[)"
            [ "envelope" ]
            lease_ms = 100

            """
        XCTAssertEqual(try load(lookAlikes).realtimePriority, 0)
        XCTAssertEqual(try load(lookAlikes).leaseMilliseconds, 100)
        XCTAssertEqual(try load("\u{FEFF}" + lookAlikes).leaseMilliseconds, 100, "a file saved with a byte-order mark")
        // toml++ refuses these itself, with its own message (no crash): not ours to catch.
        for text in ["[]", "[[]]", "[ [a]]"] { assertSyntax(text, mentions: ["line 1"]) }
        XCTAssertNil(MachineConfigurationLoader.tomlppTrap(in: "a = \"\"\"\n[)\n\"\"\"\nb = '''\n[)'''\nc = [\n  [1],\n]\n"))
    }

    func testRealtimePriorityIsOptionalAndWithinWhatLinuxOffers() throws {
        XCTAssertNil(try load(Self.minimal).realtimePriority, "absent: real-time when allowed, on an applicator")
        XCTAssertEqual(try load("[host]\nrealtime_priority = 0\n").realtimePriority, 0, "ordinary, asked for")
        XCTAssertEqual(try load("[host]\nrealtime_priority = 50\n").realtimePriority, 50)
        XCTAssertEqual(try load("[host]\nrealtime_priority = 1\n").realtimePriority, 1)
        XCTAssertEqual(try load("[host]\nrealtime_priority = 99\n").realtimePriority, 99)
        assertIssue("[host]\nrealtime_priority = -1\n", .outOfRange, keyPath: "host.realtime_priority",
                    mentions: ["= -1", "1–99", "0 asks for ordinary scheduling"])
        assertIssue("[host]\nrealtime_priority = 100\n", .outOfRange, keyPath: "host.realtime_priority", mentions: ["= 100"])
        assertIssue("[host]\nrealtime_priority = \"high\"\n", .wrongType, keyPath: "host.realtime_priority",
                    mentions: ["\"high\"", "whole number"])
        assertIssue("[host]\nrealtime = 50\n", .unknownKey, keyPath: "host.realtime",
                    mentions: ["did you mean \"realtime_priority\"?"])
    }

    /// Issue 19, item 4: the machine file may name who runs its sessions.
    func testHostOperatorIsOptionalAndNotBlank() throws {
        XCTAssertNil(try load(Self.minimal).operatorName)
        XCTAssertEqual(try load("[host]\noperator = \"A. Technician\"\n").operatorName, "A. Technician")
        assertIssue("[host]\noperator = \"  \"\n", .wrongType, keyPath: "host.operator", mentions: ["not blank"])
        assertIssue("[host]\noperator = 7\n", .wrongType, keyPath: "host.operator", mentions: ["a string"])
    }

    func testEmptyDepthRange() {
        assertIssue("[envelope]\ndepth_min_mm = 1.0\ndepth_max_mm = 0.8\n", .conflict, keyPath: "envelope.depth_min_mm",
                    mentions: ["envelope.depth_max_mm", "empty"])
        assertIssue("[envelope]\ndwell_min_ms = 400\ndwell_max_ms = 300\n", .conflict, keyPath: "envelope.dwell_min_ms",
                    mentions: ["envelope.dwell_max_ms"])
        // Each end alone inside the built-in range, the other end built-in: empty after rounding inwards.
        assertIssue("[envelope]\ndepth_min_mm = 0.5004\ndepth_max_mm = 0.5003\n", .conflict, keyPath: "envelope.depth_min_mm")
    }

    // MARK: - Shape

    func testUnknownKeysAreErrorsWithSuggestions() {
        assertIssue("[envelop]\n", .unknownKey, keyPath: "envelop", mentions: ["did you mean \"envelope\"?"])
        assertIssue("[envelope]\ndepth_max = 1.0\n", .unknownKey, keyPath: "envelope.depth_max",
                    mentions: ["did you mean \"depth_max_mm\"?"])
        assertIssue(Self.minimal + "[[interlock]]\nname = \"c\"\nrole = \"contact\"\nchip = \"gpiochip0\"\nline = 3\n"
                    + "active_low = false\nbias = \"as-is\"\ndebounce = 5\n",
                    .unknownKey, keyPath: "interlock[2].debounce", mentions: ["did you mean \"debounce_ms\"?"])
        assertIssue("[applicator]\ndevise = \"/dev/ttyACM0\"\n", .unknownKey, keyPath: "applicator.devise",
                    mentions: ["did you mean \"device\"?"])
        assertIssue("[applicator.match]\nvendor_id = \"1209\"\nproduct_id = \"5350\"\nserial_number = \"x\"\n",
                    .unknownKey, keyPath: "applicator.match.serial_number")
        assertIssue("lease_ms = 100\n", .unknownKey, keyPath: "lease_ms", mentions: ["top-level"])
    }

    func testSyntaxErrorsGiveTheLine() {
        guard let issue = issue("[envelope]\ndepth_max_mm = = 1\n") else { return }
        XCTAssertEqual(issue.code, .syntax)
        XCTAssertTrue(issue.message.contains("line 2"), issue.message)
    }

    func testInterlockWrittenAsATableInsteadOfAnArrayOfTables() {
        assertIssue("[interlock]\nname = \"estop\"\n", .wrongType, keyPath: "interlock", mentions: ["[[interlock]]"])
    }

    // MARK: - [[interlock]] and [[output]]

    private func replacing(_ old: String, with new: String) -> String {
        precondition(Self.minimal.contains(old))
        var text = Self.minimal
        text.replaceSubrange(text.range(of: old)!, with: new)
        return text
    }

    func testDebounceAboveTheMaximumNamesKeyValueAndLimit() {
        assertIssue(replacing("debounce_ms = 20", with: "debounce_ms = 500"), .outOfRange, keyPath: "interlock[1].debounce_ms",
                    mentions: ["= 500", "100 ms", "\"pedal\""])
        assertIssue(replacing("debounce_ms = 20", with: "debounce_ms = -1"), .outOfRange, keyPath: "interlock[1].debounce_ms",
                    mentions: ["= -1", "0 ms"])
        assertIssue(replacing("debounce_ms = 20", with: "debounce_ms = \"20\""), .wrongType, keyPath: "interlock[1].debounce_ms")
    }

    func testDebounceInFractionsOfAMillisecond() throws {
        let configuration = try load(replacing("debounce_ms = 20", with: "debounce_ms = 2.5"))
        XCTAssertEqual(configuration.inputs[1].debounce, .microseconds(2_500))
    }

    func testRoleMustBeKnown() {
        assertIssue(replacing("role = \"pedal\"", with: "role = \"pedel\""), .invalidValue, keyPath: "interlock[1].role",
                    mentions: ["\"pedel\"", "did you mean \"pedal\"?", "\"estop\", \"pedal\", \"contact\", \"cartridge\""])
    }

    func testBiasMustBeKnown() {
        assertIssue(replacing("bias = \"pull-up\"\n\n[[interlock]]", with: "bias = \"pullup\"\n\n[[interlock]]"),
                    .invalidValue, keyPath: "interlock[0].bias", mentions: ["\"pullup\"", "did you mean \"pull-up\"?", "\"estop\""])
    }

    func testChipMustBeAChipNameOrPath() {
        assertIssue(replacing("chip = \"gpiochip0\"\nline = 27", with: "chip = \"gpio0\"\nline = 27"), .invalidValue,
                    keyPath: "interlock[1].chip", mentions: ["\"gpio0\"", "gpiochip0", "gpiodetect"])
        assertIssue(replacing("chip = \"gpiochip0\"\nline = 27", with: "chip = \"gpiochip\"\nline = 27"), .invalidValue,
                    keyPath: "interlock[1].chip")
        XCTAssertNoThrow(try load(replacing("chip = \"gpiochip0\"\nline = 27", with: "chip = \"/dev/gpiochip1\"\nline = 27")))
    }

    func testLineMustBeAWholeNumberInRange() {
        assertIssue(replacing("line = 27", with: "line = -1"), .outOfRange, keyPath: "interlock[1].line", mentions: ["= -1", "65535"])
        assertIssue(replacing("line = 27", with: "line = 70000"), .outOfRange, keyPath: "interlock[1].line")
        assertIssue(replacing("line = 27", with: "line = \"27\""), .wrongType, keyPath: "interlock[1].line",
                    mentions: ["\"27\"", "whole number"])
        assertIssue(replacing("line = 27\n", with: ""), .missingKey, keyPath: "interlock[1].line", mentions: ["gpioinfo"])
    }

    func testPolarityAndBiasHaveNoDefault() {
        assertIssue(replacing("active_low = true\n", with: ""), .missingKey, keyPath: "interlock[1].active_low",
                    mentions: ["wiring"])
        assertIssue(replacing("active_low = true", with: "active_low = 1"), .wrongType, keyPath: "interlock[1].active_low",
                    mentions: ["true or false"])
        assertIssue(replacing("bias = \"pull-up\"\ndebounce_ms", with: "debounce_ms"), .missingKey, keyPath: "interlock[1].bias")
    }

    func testNameMissingOrEmpty() {
        assertIssue(replacing("name = \"pedal\"\n", with: ""), .missingKey, keyPath: "interlock[1].name")
        assertIssue(replacing("name = \"pedal\"", with: "name = \"\""), .invalidValue, keyPath: "interlock[1].name")
    }

    func testNamesAndLinesAreUnique() {
        assertIssue(replacing("name = \"pedal\"", with: "name = \"estop\""), .duplicate, keyPath: "interlock[1].name",
                    mentions: ["interlock[0]"])
        // The same line written once as a name and once as a path.
        assertIssue(replacing("chip = \"gpiochip0\"\nline = 27", with: "chip = \"/dev/gpiochip0\"\nline = 17"), .duplicate,
                    keyPath: "interlock[1].line", mentions: ["= 17", "interlock[0]"])
        assertIssue(Self.minimal + "[[output]]\nname = \"n\"\nrole = \"needle-power\"\nchip = \"gpiochip0\"\nline = 27\nactive_low = false\n",
                    .duplicate, keyPath: "output[0].line", mentions: ["interlock[1]"])
    }

    func testAtLeastOneEstopWhenThereAreInterlocks() {
        assertIssue(replacing("role = \"estop\"", with: "role = \"contact\""), .missingKey, keyPath: "interlock",
                    mentions: ["estop"])
    }

    func testOutputs() throws {
        let needle = "[[output]]\nname = \"needle\"\nrole = \"needle-power\"\nchip = \"gpiochip0\"\nline = 24\nactive_low = false\n"
        let configuration = try load(Self.minimal + needle)
        XCTAssertEqual(configuration.outputs, [InterlockOutput(name: "needle", role: .needlePower, chip: "gpiochip0",
                                                               lineOffset: 24, activeLow: false)])
        XCTAssertEqual(configuration.interlockWiring.gpioOutputs.first?.safeLevel, .inactive)
        assertIssue(Self.minimal + needle + needle.replacingOccurrences(of: "name = \"needle\"", with: "name = \"n2\"")
                        .replacingOccurrences(of: "line = 24", with: "line = 25"),
                    .duplicate, keyPath: "output[1].role", mentions: ["output[0]", "at most one"])
        assertIssue(Self.minimal + needle.replacingOccurrences(of: "needle-power", with: "needle"), .invalidValue,
                    keyPath: "output[0].role", mentions: ["did you mean \"needle-power\"?"])
        assertIssue(Self.minimal + needle.replacingOccurrences(of: "active_low = false\n", with: ""), .missingKey,
                    keyPath: "output[0].active_low")
        assertIssue(Self.minimal + needle + "bias = \"pull-up\"\n", .unknownKey, keyPath: "output[0].bias")
    }

    func testOutputsAloneAreAllowedButNotDeveloperModeFree() throws {
        // Outputs without inputs: still developer mode (nothing is watched), outputs driven safe.
        let configuration = try load("[[output]]\nname = \"lamp\"\nrole = \"lamp\"\nchip = \"gpiochip0\"\nline = 1\nactive_low = false\n")
        XCTAssertTrue(configuration.isDeveloperMode)
    }

    // MARK: - [applicator]

    func testApplicatorProblems() {
        assertIssue("[applicator]\ndevice = \"/dev/ttyACM0\"\n[applicator.match]\nvendor_id = \"1209\"\nproduct_id = \"5350\"\n",
                    .conflict, keyPath: "applicator", mentions: ["not both"])
        assertIssue("[applicator]\ndevice = \"ttyACM0\"\n", .invalidValue, keyPath: "applicator.device",
                    mentions: ["absolute path"])
        assertIssue("[applicator]\ndevice = 3\n", .wrongType, keyPath: "applicator.device", mentions: ["an integer", "a string"])
        assertIssue("[applicator.match]\nvendor_id = \"12G9\"\nproduct_id = \"5350\"\n", .invalidValue,
                    keyPath: "applicator.match.vendor_id", mentions: ["\"12G9\"", "four hex digits"])
        assertIssue("[applicator.match]\nvendor_id = 70000\nproduct_id = \"5350\"\n", .outOfRange,
                    keyPath: "applicator.match.vendor_id", mentions: ["70000"])
        assertIssue("[applicator.match]\nvendor_id = \"1209\"\n", .missingKey, keyPath: "applicator.match.product_id")
        assertIssue("[applicator.match]\nvendor_id = \"1209\"\nproduct_id = \"5350\"\nserial = \"\"\n", .invalidValue,
                    keyPath: "applicator.match.serial")
        assertIssue("applicator = 1\n", .wrongType, keyPath: "applicator", mentions: ["a table"])
    }

    func testEveryProblemIsReportedAtOnce() {
        let text = "[envelope]\ndepth_max_mm = 2\nlease_ms = 5\nfoo = 1\n" + replacing("line = 27", with: "line = -3")
        XCTAssertThrowsError(try load(text)) { error in
            let error = error as! MachineConfigurationError
            XCTAssertEqual(Set(error.issues.map(\.keyPath)),
                           ["envelope.depth_max_mm", "envelope.lease_ms", "envelope.foo", "interlock[1].line"])
            XCTAssertEqual(error.description.split(separator: "\n").count, 4)
            XCTAssertTrue(error.description.split(separator: "\n").allSatisfy { $0.hasPrefix("machine.toml: ") })
            XCTAssertFalse(error.isUnreadable)
        }
    }

    // MARK: - describe (`smpctl config check`)

    func testDescribeShowsTheEffectiveEnvelope() throws {
        let path = Self.packageRoot.appendingPathComponent("Examples/machine.toml").path
        let configuration = try MachineConfigurationLoader.load(path: path)
        let limits = DeviceLimits(depthMinMicrometres: 400, depthMaxMicrometres: 2_000, dwellMinMicroseconds: 10_000,
                                  dwellMaxMicroseconds: 250_000, travelXMicrometres: 200_000, travelYMicrometres: 80_000,
                                  travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 15_000,
                                  retractMicroseconds: 15_000)
        let text = configuration.describe(deviceLimits: limits)
        XCTAssertTrue(text.contains("Machine configuration: \(path)"), text)
        XCTAssertTrue(text.contains("USB 1209:5350 serial \"A1B2C3\""), text)
        XCTAssertTrue(text.contains("Envelope (configuration): depth 0.3–1.2 mm, dwell 20–300 ms, travel ±120 × ±100 mm, "
                                    + "dots ≥ 0.6 mm apart, ≤ 12 dots/s"), text)
        XCTAssertTrue(text.contains("Effective envelope (configuration ∩ device): depth 0.4–1.2 mm, dwell 20–250 ms, "
                                    + "travel ±120 × ±80 mm"), text)
        XCTAssertTrue(text.contains("estop      \"estop\""), text)
        XCTAssertTrue(text.contains("stop when pressed"), text)
        XCTAssertTrue(text.contains("stop when released"), text)
        XCTAssertTrue(text.contains("needle-power"), text)
        XCTAssertFalse(text.contains("DEVELOPER"), text)

        let unknown = configuration.describe(deviceLimits: nil)
        XCTAssertTrue(unknown.contains("until the applicator's limits are known"), unknown)
    }

    func testDescribeSaysWhenNoDotCanRun() throws {
        let configuration = try load("[envelope]\ndepth_max_mm = 0.5\n")
        let limits = DeviceLimits(depthMinMicrometres: 600, depthMaxMicrometres: 1_500, dwellMinMicroseconds: 20_000,
                                  dwellMaxMicroseconds: 500_000, travelXMicrometres: 150_000, travelYMicrometres: 150_000,
                                  travelSpeedMicrometresPerSecond: 50_000, descendMicroseconds: 1, retractMicroseconds: 1)
        XCTAssertTrue(configuration.describe(deviceLimits: limits).contains("Effective envelope: NONE"))
    }

    func testDescribeNotesAMissingNeedlePowerOutput() throws {
        XCTAssertTrue(try load(Self.minimal).describe(deviceLimits: nil).contains("no needle-power output"))
    }
}
