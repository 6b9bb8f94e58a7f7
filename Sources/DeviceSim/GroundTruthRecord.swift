import Dispatch
import FirmwareProtocol
import Foundation
import SMPSystem

/// The simulator's ground truth: every dot the needle entered the skin for, exactly as the
/// simulated hardware executed it. Tests compare the host's own records against it.
///
/// ## File format (NDJSON)
/// One JSON object per line, one line per dot the needle entered the skin for (a dot stopped in
/// its travel phase never touched the skin and has no line), written when the needle left the
/// skin. Keys always appear in this order; all numbers are integers:
///
/// | key | meaning |
/// |---|---|
/// | `dot` | the plan's dot id (DOT `dot_id`) |
/// | `seq` | the DOT frame's 8-bit sequence number |
/// | `epoch` | the epoch the DOT carried |
/// | `x_um`, `y_um` | position, µm from the centre of travel |
/// | `depth_um` | commanded depth, µm |
/// | `dwell_us` | commanded dwell, µs |
/// | `dwell_done_us` | simulated time actually spent at depth, µs (= `dwell_us` when done) |
/// | `entry_sim_time_us` | simulated time when the needle started to descend |
/// | `sim_time_us` | simulated time when the needle was back at standoff (for an interrupted dot: when it was cut off); equals the DOT_DONE's `device_time_us` |
/// | `wall_time_us` | simulator wall time of that moment, µs since the simulator started |
/// | `boot_id` | the device's boot id at the time (changes with `reset-at`) |
/// | `done_count` | the device's done_count after this dot (an interrupted dot does not count) |
/// | `outcome` | `"done"` (full dwell, needle retracted, DOT_DONE sent — except when a reset cut the retraction short, then no DOT_DONE) or `"interrupted"` (an e-stop, a fault, an ABORT or a reset cut the descend or the dwell short) |
/// | `cause` | interrupted lines only: `"host_abort"`, `"reset"` or the shutdown fault (`"host_estop"`, `"estop_button"`, `"over_depth"`, `"dot_out_of_limits"`, …) |
///
/// Example:
/// `{"dot":42,"seq":1,"epoch":0,"x_um":-12500,"y_um":30250,"depth_um":800,"dwell_us":120000,"dwell_done_us":120000,"entry_sim_time_us":650771,"sim_time_us":785771,"wall_time_us":785771,"boot_id":305419896,"done_count":1,"outcome":"done"}`
///
/// Simulated time is the physics clock: it runs at the wall rate between dots and by the
/// declared durations during a dot, whatever the time scale (see `Firmware`).
///
/// Durability: the file is opened `O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC` (mode 0644) and each
/// line is one `write(2)`, so a killed simulator never leaves a torn line and several simulator
/// processes appending to one file keep their lines whole. The same entries are kept in memory
/// (`entries`) for in-process tests, unless `keepsEntries` is false (the CLI: 200,000 dots kept
/// for nobody cost ~20 MB).
public final class GroundTruthRecord: Sendable {
    /// The NDJSON file, if any.
    public let path: String?
    /// Whether `entries` keeps every dot appended.
    public let keepsEntries: Bool
    private let storage: Locked<Storage>

    private struct Storage {
        var fd: Int32
        var entries: [InjectedDot] = []
        var writeErrors = 0
    }

    /// Opens (creating, appending to) `path`; nil keeps the record in memory only. With
    /// `keepsEntries` false nothing is kept in memory (`entries` stays empty).
    public init(path: String?, keepsEntries: Bool = true) throws(SimulatorError) {
        self.path = path
        self.keepsEntries = keepsEntries
        var fd: Int32 = -1
        if let path {
            switch Sys.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode: 0o644) {
            case .success(let descriptor): fd = descriptor
            case .failure(let errno): throw SimulatorError.system("open(\(path))", errno)
            }
        }
        storage = Locked(Storage(fd: fd))
    }

    deinit {
        // Every pending write block holds `self`, so none is left by now (the last one may be
        // releasing us on the writer queue: waiting for that queue here would deadlock).
        closeFile()
    }

    /// Appends one dot: the in-memory copy now, one write(2) of one line on the writer queue.
    public func append(_ dot: InjectedDot) {
        let line = Array(Self.line(for: dot).utf8) + [0x0A]
        if keepsEntries { storage.withLock { $0.entries.append(dot) } }
        // The file is written on its own queue, in order: a disk busy with someone else's writes
        // (dirty-page throttling can block write(2) for hundreds of milliseconds) must never
        // stall the firmware's queue — a real MCU's UART keeps receiving while its log is slow.
        writer.async { [self] in
            storage.withLock { storage in
                if storage.fd >= 0 && !Self.writeAll(storage.fd, line) {
                    storage.writeErrors += 1
                }
            }
        }
    }

    private let writer = DispatchQueue(label: "smpctl.sim.record")

    /// Waits until every appended line is in the file.
    public func flush() {
        writer.sync {}
    }

    /// Every dot recorded by this process, in order (none when not `keepsEntries`).
    public var entries: [InjectedDot] {
        storage.withLock { $0.entries }
    }

    /// Lines that could not be written (disk full, I/O error).
    public var writeErrors: Int {
        storage.withLock { $0.writeErrors }
    }

    /// Closes the file (idempotent); the in-memory entries stay readable.
    public func close() {
        flush()
        closeFile()
    }

    private func closeFile() {
        storage.withLock { storage in
            if storage.fd >= 0 {
                closeDescriptor(storage.fd)
                storage.fd = -1
            }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let result = bytes.withUnsafeBytes { Sys.write(fd, from: UnsafeRawBufferPointer(rebasing: $0[offset...])) }
            guard case .success(.transferred(let written)) = result else { return false }
            offset += written  // a short write only happens on a full disk; finish the line
        }
        return true
    }

    /// The NDJSON line for one dot (no trailing newline).
    public static func line(for dot: InjectedDot) -> String {
        var fields = [
            "\"dot\":\(dot.dotID)",
            "\"seq\":\(dot.seq)",
            "\"epoch\":\(dot.epoch)",
            "\"x_um\":\(dot.xMicrometres)",
            "\"y_um\":\(dot.yMicrometres)",
            "\"depth_um\":\(dot.depthMicrometres)",
            "\"dwell_us\":\(dot.dwellMicroseconds)",
            "\"dwell_done_us\":\(dot.dwellDeliveredMicroseconds)",
            "\"entry_sim_time_us\":\(dot.skinEntrySimulatedMicroseconds)",
            "\"sim_time_us\":\(dot.simulatedTimeMicroseconds)",
            "\"wall_time_us\":\(dot.wallTimeMicroseconds)",
            "\"boot_id\":\(dot.bootID)",
            "\"done_count\":\(dot.doneCount)",
            "\"outcome\":\"\(dot.outcome.rawValue)\"",
        ]
        if let cause = dot.cause { fields.append("\"cause\":\"\(cause)\"") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// Parses one line written by `line(for:)`; nil if it is not one.
    public static func parse(line: some StringProtocol) -> InjectedDot? {
        guard let data = String(line).data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        func int<T: FixedWidthInteger>(_ key: String, _: T.Type = T.self) -> T? {
            guard let number = object[key] as? NSNumber else { return nil }
            return T(exactly: number.int64Value) ?? (T.self == UInt64.self ? T(exactly: number.uint64Value) : nil)
        }
        guard let dotID: UInt32 = int("dot"), let seq: UInt8 = int("seq"), let epoch: UInt16 = int("epoch"),
              let x: Int32 = int("x_um"), let y: Int32 = int("y_um"), let depth: UInt16 = int("depth_um"),
              let dwell: UInt32 = int("dwell_us"), let delivered: UInt64 = int("dwell_done_us"),
              let entry: UInt64 = int("entry_sim_time_us"), let sim: UInt64 = int("sim_time_us"),
              let wall: UInt64 = int("wall_time_us"), let boot: UInt32 = int("boot_id"),
              let done: UInt32 = int("done_count"),
              let outcome = (object["outcome"] as? String).flatMap(InjectedDot.Outcome.init(rawValue:))
        else { return nil }
        var cause: Interruption?
        if let name = object["cause"] as? String {
            if name == "host_abort" {
                cause = .abort
            } else if name == "reset" {
                cause = .reset
            } else if let fault = FaultCode.allCases.first(where: { $0.recordName == name }) {
                cause = .shutdown(fault)
            } else {
                return nil
            }
        }
        return InjectedDot(dotID: dotID, seq: seq, epoch: epoch, xMicrometres: x, yMicrometres: y,
                           depthMicrometres: depth, dwellMicroseconds: dwell, dwellDeliveredMicroseconds: delivered,
                           skinEntrySimulatedMicroseconds: entry, simulatedTimeMicroseconds: sim,
                           wallTimeMicroseconds: wall, bootID: boot, outcome: outcome, cause: cause, doneCount: done)
    }

    /// Reads every line of an NDJSON record file (for tests and tools). Unparseable lines are
    /// returned as nil so a caller can fail on them.
    public static func read(path: String) throws -> [InjectedDot?] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: true).map { parse(line: $0) }
    }
}
