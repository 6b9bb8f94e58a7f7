import CBenchSupport
import DeviceSim
import FirmwareProtocol
import Foundation
import Logging
import SessionRunner
import SMPInterlocks
import SMPMachine
import SMPRecords
import SMPPlanReader
import SMPPlan
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// When the session's milestones happened (CLOCK_MONOTONIC ns), written from the session queue.
final class Milestones: Sendable {
    private struct State {
        var armed: UInt64 = 0
        var firstProgress: UInt64 = 0
        var lastProgress: UInt64 = 0
        var progressEvents = 0
        var mallocsAtArm: Int?
        var cpuAtArm: CPUTimes?
    }
    private let state = Mutex(State())

    func record(_ event: SessionEvent) {
        let now = Clock.now()
        state.withLock { s in
            switch event {
            case .armed:
                s.armed = now
                s.mallocsAtArm = mallocCount()
                s.cpuAtArm = CPUTimes.process()
            case .progress:
                if s.firstProgress == 0 { s.firstProgress = now }
                s.lastProgress = now
                s.progressEvents += 1
            default: break
            }
        }
    }

    var armed: UInt64 { state.withLock { $0.armed } }
    var mallocsAtArm: Int? { state.withLock { $0.mallocsAtArm } }
    var cpuAtArm: CPUTimes? { state.withLock { $0.cpuAtArm } }
    var firstProgress: UInt64 { state.withLock { $0.firstProgress } }
    var lastProgress: UInt64 { state.withLock { $0.lastProgress } }
}

struct SessionRun {
    var account: SessionAccount
    var started: UInt64
    var armed: UInt64
    var finished: UInt64
    var cpu: CPUTimes
    /// CPU from the start of `run` to ARM (handshake, record creation, preflight), within `cpu`.
    var cpuBeforeArm: CPUTimes?
    var voluntarySwitches: Int
    var involuntarySwitches: Int
    /// Allocations in this process from ARM to the end, when run under the malloc counter
    /// (scripts/bench-malloc-count.c); nil otherwise.
    var mallocsAfterArm: Int?
    /// Write transactions of the record (each one commit, one fsync): creation, group commits, end.
    var recordCommits: Int

    /// Dots per second from ARM to the last record committed: the streaming rate.
    var streamingRate: Double {
        Double(account.done.count) / (Double(finished &- armed) / 1e9)
    }
    /// Dots per second over the whole `run` call (handshake, record creation, streaming, end).
    var overallRate: Double {
        Double(account.done.count) / (Double(finished &- started) / 1e9)
    }
    var wallSeconds: Double { Double(finished &- started) / 1e9 }
}

/// Records in a new database in `directory` (nil: records off, the streaming path alone).
func recordingOptions(plan: Plan, planPath: String, directory: String?, commits: CommitCounter? = nil) throws -> RecordingOptions? {
    guard let directory else { return nil }
    let store = try RecordStore(path: directory + "/records.sqlite")
    let options = RecordingOptions(store: store, planPath: planPath, planSHA256: plan.sha256 ?? "",
                                   operatorName: "smp-bench", machineID: "smp-bench")
    guard let commits else { return options }
    return RecordingOptions(recorder: CountingRecorder(base: options.recorder, commits: commits))
}

/// Counts the record's write transactions, to set beside `strace -c`'s fdatasync count.
final class CommitCounter: Sendable {
    private let value = Mutex(0)
    func add(_ n: Int) { value.withLock { $0 += n } }
    var count: Int { value.withLock { $0 } }
}

struct CountingRecorder: SessionRecorder {
    let base: any SessionRecorder
    let commits: CommitCounter
    func open(_ opening: RecordOpening) throws(RecordStoreError) -> OpenedRecord {
        // A new session: createSession's transaction and the first batch's.
        let opened = try base.open(opening)
        commits.add(opening.resumeSessionID == nil ? 2 : 1)
        return opened
    }
    func apply(_ batch: RecordBatch, session: Int64) throws(RecordStoreError) {
        try base.apply(batch, session: session)
        if !batch.isEmpty { commits.add(1) }
    }
    func release(session: Int64) { base.release(session: session) }
}

/// The malloc counter's running total, when the process runs under it (LD_PRELOAD of
/// scripts/bench-malloc-count.c, which exports `bench_malloc_count`).
func mallocCount() -> Int? {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "bench_malloc_count") else { return nil }
    typealias Count = @convention(c) () -> UInt
    return Int(unsafeBitCast(symbol, to: Count.self)())
}

/// One whole session (handshake, preflight accepted at once, streaming, end) on `devicePath`.
func runSession(plan: Plan, planPath: String, devicePath: String, recordsDirectory: String?,
                leaseMilliseconds: Int? = nil, requireCompletion: Bool = true, lineBytesPerSecond: Int? = nil,
                protocolMinor: UInt8? = nil, interlocks: Interlocks? = nil,
                onEvent: (@Sendable (SessionEvent) -> Void)? = nil) throws -> SessionRun {
    var options = SessionOptions()
    options.interlocks = interlocks
    if let leaseMilliseconds { options.link.requestedLease = .milliseconds(leaseMilliseconds) }
    options.link.lineBytesPerSecond = lineBytesPerSecond
    if let protocolMinor { options.link.protocolMinor = protocolMinor }
    let commits = CommitCounter()
    options.recording = try recordingOptions(plan: plan, planPath: planPath, directory: recordsDirectory,
                                             commits: commits)
    let session = Session(plan: plan, options: options, logger: quietLogger("smp-bench.session"))
    let milestones = Milestones()
    var v0 = 0, i0 = 0
    bench_context_switches(&v0, &i0)
    let cpu0 = CPUTimes.process()
    let started = Clock.now()
    let account = try session.run(devicePath: devicePath, confirm: { _ in true }, onEvent: { event in
        milestones.record(event)
        onEvent?(event)
    })
    let finished = Clock.now()
    let cpu = CPUTimes.process() - cpu0
    var v1 = 0, i1 = 0
    bench_context_switches(&v1, &i1)
    guard !requireCompletion || (account.outcome == .completed && account.done.count == plan.dots.count) else {
        throw BenchFailure("session ended \(account.outcome.rawValue) with \(account.done.count) of \(plan.dots.count) done: \(account.reason ?? "")")
    }
    let mallocs = mallocCount().flatMap { end in milestones.mallocsAtArm.map { end - $0 } }
    return SessionRun(account: account, started: started, armed: milestones.armed, finished: finished, cpu: cpu,
                      cpuBeforeArm: milestones.cpuAtArm.map { $0 - cpu0 },
                      voluntarySwitches: v1 - v0, involuntarySwitches: i1 - i0, mallocsAfterArm: mallocs,
                      recordCommits: commits.count)
}

/// Simulated interlocks as `smpctl run --sim` has them when the machine file names no lines
/// (`MachineConfiguration.withSimulatedInterlockLines`), all healthy, the chip checked every
/// quarter of `leaseMilliseconds` as on a clinic machine.
func simulatedInterlocks(leaseMilliseconds: Int) throws -> Interlocks {
    var configuration = MachineConfiguration(inputs: [], outputs: []).withSimulatedInterlockLines()
    configuration.leaseMilliseconds = leaseMilliseconds
    return try Interlocks.open(configuration: configuration, simulated: true, logger: quietLogger("smp-bench.interlocks"))
}

func startSimulator(timeScale: Double, seed: UInt64) throws -> SimulatedApplicator {
    var options = SimulatorOptions()
    options.timeScale = timeScale
    options.seed = seed
    return try SimulatedApplicator.start(options, logger: quietLogger("smp-bench.sim"))
}

func loadPlan(_ path: String) throws -> Plan {
    do {
        return try PlanLoader.load(path: path).0
    } catch {
        throw BenchFailure("\(path): \(error.issues.prefix(5).map { "\($0)" }.joined(separator: "; "))")
    }
}
