/// Protocol version spoken by this codec. A peer with another major version is refused at HELLO.
public enum ProtocolVersion {
    public static let major: UInt8 = 1
    /// 1.1 added PACE, capability bit 5 and STATUS `pace_ms`; 1.2 added SPACING, SPACING_REPLY,
    /// capability bit 6 and REFUSED `too_close`; 1.3 one cumulative ACK per block of DOTs and no
    /// STATUS for ready ↔ running alone, when both sides speak it (the lower minor rules); 1.4
    /// HEARTBEAT, a heartbeat the device does not answer, sent only to a 1.4 device.
    /// An older peer never sees what it does not know.
    public static let minor: UInt8 = 4
}

/// Message type identifiers (first byte of every decoded frame). Host → device below 0x80,
/// device → host from 0x80.
public enum MessageType: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case statusRequest = 0x02
    case arm = 0x03
    case clear = 0x04
    case pace = 0x05
    case spacing = 0x06
    case heartbeat = 0x07
    case dot = 0x10
    case hold = 0x20
    case resume = 0x21
    case abort = 0x22
    case estop = 0x2F
    case helloReply = 0x81
    case ack = 0x82
    case nak = 0x83
    case dotDone = 0x84
    case status = 0x85
    case refused = 0x86
    case spacingReply = 0x87
}

/// Hardware limits the device declares in its HELLO reply. Units are in the names.
public struct DeviceLimits: Sendable, Hashable {
    public var depthMinMicrometres: UInt16 = 0
    public var depthMaxMicrometres: UInt16 = 0
    public var dwellMinMicroseconds: UInt32 = 0
    public var dwellMaxMicroseconds: UInt32 = 0
    /// Largest |x| the gantry reaches, from the centre of travel.
    public var travelXMicrometres: UInt32 = 0
    /// Largest |y| the gantry reaches, from the centre of travel.
    public var travelYMicrometres: UInt32 = 0
    /// Travel speed between dots, used with descend and retract time to predict a dot's duration.
    public var travelSpeedMicrometresPerSecond: UInt32 = 0
    public var descendMicroseconds: UInt32 = 0
    public var retractMicroseconds: UInt32 = 0

    public init(
        depthMinMicrometres: UInt16, depthMaxMicrometres: UInt16,
        dwellMinMicroseconds: UInt32, dwellMaxMicroseconds: UInt32,
        travelXMicrometres: UInt32, travelYMicrometres: UInt32,
        travelSpeedMicrometresPerSecond: UInt32,
        descendMicroseconds: UInt32, retractMicroseconds: UInt32
    ) {
        self.depthMinMicrometres = depthMinMicrometres
        self.depthMaxMicrometres = depthMaxMicrometres
        self.dwellMinMicroseconds = dwellMinMicroseconds
        self.dwellMaxMicroseconds = dwellMaxMicroseconds
        self.travelXMicrometres = travelXMicrometres
        self.travelYMicrometres = travelYMicrometres
        self.travelSpeedMicrometresPerSecond = travelSpeedMicrometresPerSecond
        self.descendMicroseconds = descendMicroseconds
        self.retractMicroseconds = retractMicroseconds
    }
}

/// Capability bits in the HELLO reply.
public struct Capabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The device de-duplicates DOT frames by sequence number.
    public static let deduplication = Capabilities(rawValue: 1 << 0)
    /// HOLD / ABORT fence queued DOTs by epoch.
    public static let epochFence = Capabilities(rawValue: 1 << 1)
    /// The device enforces the lease.
    public static let lease = Capabilities(rawValue: 1 << 2)
    /// The device has a skin-contact sensor of its own.
    public static let contactSensor = Capabilities(rawValue: 1 << 3)
    /// The device has a depth/force sensor and faults on over-depth.
    public static let depthSensor = Capabilities(rawValue: 1 << 4)
    /// The device takes PACE: a minimum interval between skin entries (protocol 1.1).
    public static let pace = Capabilities(rawValue: 1 << 5)
    /// The device takes SPACING and refuses a dot too close to a recent skin entry (protocol 1.2).
    public static let spacing = Capabilities(rawValue: 1 << 6)
}

/// Device state as reported in STATUS.
public enum DeviceState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// After boot or CLEAR: needle power off, DOT refused until ARM.
    case disarmed = 0
    /// Armed, queue empty, needle retracted.
    case ready = 1
    /// Executing or holding queued dots.
    case running = 2
    /// Held by HOLD or lease expiry: needle retracted, queue flushed, resumable by RESUME.
    case held = 3
    /// Latched e-stop (host ESTOP or the device's button): only ESTOP, STATUS, CLEAR accepted.
    case estop = 4
    /// Latched device fault: only ESTOP, STATUS, CLEAR accepted.
    case fault = 5

    public var description: String {
        switch self {
        case .disarmed: "disarmed"
        case .ready: "ready"
        case .running: "running"
        case .held: "held"
        case .estop: "estop"
        case .fault: "fault"
        }
    }

    /// True in the latched shutdown states, left only by CLEAR then ARM.
    public var isLatched: Bool { self == .estop || self == .fault }
    /// Ready or running: armed, not held (the two a host treats alike).
    public var isArmedAndNotHeld: Bool { self == .ready || self == .running }
}

/// Why the device is held, stopped or faulted (STATUS `fault`, REFUSED `code`'s companion).
public enum FaultCode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case estopButton = 1
    case hostEstop = 2
    case contactLost = 3
    case overDepth = 4
    case leaseExpired = 5
    case dotOutOfLimits = 6
    case hostHold = 7
    case hostAbort = 8

    public var description: String {
        switch self {
        case .none: "none"
        case .estopButton: "e-stop button on the device"
        case .hostEstop: "e-stop from the host"
        case .contactLost: "skin contact lost"
        case .overDepth: "needle went deeper than commanded"
        case .leaseExpired: "lease expired: no frame from the host in time"
        case .dotOutOfLimits: "a dot outside the device's hardware limits was refused"
        case .hostHold: "hold from the host"
        case .hostAbort: "abort from the host"
        }
    }
}

/// Reason codes carried by NAK and REFUSED.
public enum ErrorCode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case badFrame = 1
    case outOfOrder = 2
    case queueFull = 3
    case notArmed = 4
    case shutdown = 5
    case depthOutOfRange = 6
    case dwellOutOfRange = 7
    case travelOutOfRange = 8
    case staleEpoch = 9
    case held = 10
    case versionMismatch = 11
    /// A DOT closer than the minimum spacing to a recent skin entry or to a dot queued before it
    /// (protocol 1.2); `value` = the distance in µm.
    case tooClose = 12

    public var description: String {
        switch self {
        case .badFrame: "bad frame"
        case .outOfOrder: "sequence number out of order"
        case .queueFull: "queue full"
        case .notArmed: "device not armed"
        case .shutdown: "device in latched shutdown"
        case .depthOutOfRange: "depth outside hardware limits"
        case .dwellOutOfRange: "dwell outside hardware limits"
        case .travelOutOfRange: "position outside hardware travel"
        case .staleEpoch: "dot from a fenced epoch"
        case .held: "device held"
        case .versionMismatch: "protocol version not supported"
        case .tooClose: "dot closer than the minimum spacing to a recent one"
        }
    }
}

/// ESTOP's cause byte, kept exactly as it came: an e-stop stops the device whatever its cause says,
/// so the decoder accepts every byte here (the one field of the protocol it does not validate)
/// and a frame re-encodes to exactly the bytes it was read from.
public struct EstopCause: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public init(_ fault: FaultCode) { rawValue = fault.rawValue }

    /// The fault code this byte names, nil for a byte section 7 does not list.
    public var faultCode: FaultCode? { FaultCode(rawValue: rawValue) }

    /// The shutdown reason a device latches with: the named fault, or `hostEstop` for 0 (none)
    /// and for any byte it does not know.
    public var latchReason: FaultCode {
        guard let fault = faultCode, fault != .none else { return .hostEstop }
        return fault
    }

    public var description: String {
        faultCode?.description ?? "unknown cause 0x\(String(rawValue, radix: 16))"
    }
}

/// One dot command. The only sequenced, queued message.
public struct DotCommand: Sendable, Hashable {
    public var dotID: UInt32 = 0
    public var epoch: UInt16 = 0
    public var xMicrometres: Int32 = 0
    public var yMicrometres: Int32 = 0
    public var depthMicrometres: UInt16 = 0
    public var dwellMicroseconds: UInt32 = 0

    public init(dotID: UInt32, epoch: UInt16, xMicrometres: Int32, yMicrometres: Int32,
                depthMicrometres: UInt16, dwellMicroseconds: UInt32) {
        self.dotID = dotID
        self.epoch = epoch
        self.xMicrometres = xMicrometres
        self.yMicrometres = yMicrometres
        self.depthMicrometres = depthMicrometres
        self.dwellMicroseconds = dwellMicroseconds
    }
}

public struct Hello: Sendable, Hashable {
    public var versionMajor: UInt8 = 0
    public var versionMinor: UInt8 = 0
    /// Lease the host asks for; 0 = the device default. The device grants at most 250 ms.
    public var requestedLeaseMilliseconds: UInt16 = 0
    /// Echoed in the reply so a stale reply from an earlier handshake is recognised.
    public var hostNonce: UInt32 = 0

    public init(versionMajor: UInt8 = ProtocolVersion.major, versionMinor: UInt8 = ProtocolVersion.minor,
                requestedLeaseMilliseconds: UInt16, hostNonce: UInt32) {
        self.versionMajor = versionMajor
        self.versionMinor = versionMinor
        self.requestedLeaseMilliseconds = requestedLeaseMilliseconds
        self.hostNonce = hostNonce
    }
}

public struct HelloReply: Sendable, Hashable {
    public var versionMajor: UInt8 = 0
    public var versionMinor: UInt8 = 0
    public var capabilities: Capabilities = []
    /// Random at every boot: a different value on reconnect means the device lost its RAM state.
    public var bootID: UInt32 = 0
    /// Up to 16 printable ASCII characters (`firmwareID.text` on the host).
    public var firmwareID: FirmwareID = FirmwareID()
    /// DOT frames the device can hold; the host never has more than this many unacknowledged
    /// or queued (the window).
    public var queueCapacity: UInt8 = 0
    public var leaseMilliseconds: UInt16 = 0
    public var limits: DeviceLimits = DeviceLimits()
    public var hostNonce: UInt32 = 0
    /// Dots completed since boot and the id of the last one (0 = none): the resume anchor.
    public var doneCount: UInt32 = 0
    public var lastDoneDotID: UInt32 = 0

    public init(versionMajor: UInt8 = ProtocolVersion.major, versionMinor: UInt8 = ProtocolVersion.minor,
                capabilities: Capabilities, bootID: UInt32, firmwareID: FirmwareID, queueCapacity: UInt8,
                leaseMilliseconds: UInt16, limits: DeviceLimits, hostNonce: UInt32,
                doneCount: UInt32, lastDoneDotID: UInt32) {
        self.versionMajor = versionMajor
        self.versionMinor = versionMinor
        self.capabilities = capabilities
        self.bootID = bootID
        self.firmwareID = firmwareID
        self.queueCapacity = queueCapacity
        self.leaseMilliseconds = leaseMilliseconds
        self.limits = limits
        self.hostNonce = hostNonce
        self.doneCount = doneCount
        self.lastDoneDotID = lastDoneDotID
    }
}

public struct Ack: Sendable, Hashable {
    /// Cumulative: every DOT up to and including this sequence number was accepted.
    public var ackSeq: UInt8 = 0
    /// Free queue slots after accepting: the host's credit.
    public var freeSlots: UInt8 = 0
    public var epoch: UInt16 = 0
    public init(ackSeq: UInt8, freeSlots: UInt8, epoch: UInt16) {
        self.ackSeq = ackSeq
        self.freeSlots = freeSlots
        self.epoch = epoch
    }
}

public struct Nak: Sendable, Hashable {
    /// The sequence number the device expects next; the host resends from here.
    public var expectedSeq: UInt8 = 0
    public var reason: ErrorCode = .badFrame
    public var freeSlots: UInt8 = 0
    public init(expectedSeq: UInt8, reason: ErrorCode, freeSlots: UInt8) {
        self.expectedSeq = expectedSeq
        self.reason = reason
        self.freeSlots = freeSlots
    }
}

public struct DotDone: Sendable, Hashable {
    /// Sequence number of the DOT frame that carried this dot. Dots run in sequence order, so
    /// this also confirms every earlier accepted, unfenced dot (a lost DOT_DONE is harmless).
    public var dotSeq: UInt8 = 0
    public var dotID: UInt32 = 0
    public var doneCount: UInt32 = 0
    /// Device clock at retraction, microseconds since boot.
    public var deviceTimeMicroseconds: UInt64 = 0
    public init(dotSeq: UInt8, dotID: UInt32, doneCount: UInt32, deviceTimeMicroseconds: UInt64) {
        self.dotSeq = dotSeq
        self.dotID = dotID
        self.doneCount = doneCount
        self.deviceTimeMicroseconds = deviceTimeMicroseconds
    }
}

public struct Status: Sendable, Hashable {
    public var state: DeviceState = .disarmed
    public var fault: FaultCode = .none
    public var queueDepth: UInt8 = 0
    public var freeSlots: UInt8 = 0
    public var epoch: UInt16 = 0
    /// Highest DOT sequence number accepted (same meaning as ACK's `ackSeq`).
    public var ackSeq: UInt8 = 0
    /// Sequence number of the last completed dot; meaningful when `doneCount` > 0.
    public var lastDoneSeq: UInt8 = 0
    public var lastDoneDotID: UInt32 = 0
    public var doneCount: UInt32 = 0
    /// Dot in progress (0 = none). After an e-stop it names the dot that was interrupted.
    public var currentDotID: UInt32 = 0
    public var needleRetracted: Bool = false
    /// The minimum interval between skin entries set by PACE in this host session, in ms; 0
    /// before any PACE (and always from a 1.0 device, where the field is reserved).
    public var paceMilliseconds: UInt16 = 0

    public init(state: DeviceState, fault: FaultCode, queueDepth: UInt8, freeSlots: UInt8, epoch: UInt16,
                ackSeq: UInt8, lastDoneSeq: UInt8, lastDoneDotID: UInt32, doneCount: UInt32,
                currentDotID: UInt32, needleRetracted: Bool, paceMilliseconds: UInt16 = 0) {
        self.state = state
        self.fault = fault
        self.queueDepth = queueDepth
        self.freeSlots = freeSlots
        self.epoch = epoch
        self.ackSeq = ackSeq
        self.lastDoneSeq = lastDoneSeq
        self.lastDoneDotID = lastDoneDotID
        self.doneCount = doneCount
        self.currentDotID = currentDotID
        self.needleRetracted = needleRetracted
        self.paceMilliseconds = paceMilliseconds
    }
}

public struct Refused: Sendable, Hashable {
    /// Sequence number of the refused DOT (0 when the refused frame was not a DOT).
    public var seq: UInt8 = 0
    public var dotID: UInt32 = 0
    public var code: ErrorCode = .badFrame
    /// The offending value in its wire unit (depth µm, dwell µs, coordinate µm), or 0.
    public var value: Int32 = 0
    /// The state and fault the device is in after refusing (the shutdown reason when latched).
    public var state: DeviceState = .disarmed
    public var fault: FaultCode = .none
    public init(seq: UInt8, dotID: UInt32, code: ErrorCode, value: Int32, state: DeviceState, fault: FaultCode) {
        self.seq = seq
        self.dotID = dotID
        self.code = code
        self.value = value
        self.state = state
        self.fault = fault
    }
}

/// Every message of the protocol. The sequence number lives in the frame header (`Frame.seq`).
public enum Message: Sendable, Hashable {
    case hello(Hello)
    case statusRequest
    case arm
    case clear
    /// No skin entry sooner than this many milliseconds after the previous one (protocol 1.1,
    /// capability `pace`); the device keeps its own minimum if that is longer.
    case pace(minimumIntervalMilliseconds: UInt16)
    /// No dot closer than this many micrometres to one of the device's recent skin entries
    /// (protocol 1.2, capability `spacing`); the device keeps its own minimum if that is larger.
    /// Answered with `spacingReply`.
    case spacing(minimumSpacingMicrometres: UInt32)
    /// Renews the lease and asks for nothing (protocol 1.4): the heartbeat of a host that has
    /// heard from the device within the lease. Never answered.
    case heartbeat
    case dot(DotCommand)
    case hold(epoch: UInt16)
    /// Leaves `held`; `nextSeq` is the sequence number of the next DOT the host will send, so
    /// the host never has to fill sequence gaps left by dots the fence discarded.
    case resume(epoch: UInt16, nextSeq: UInt8)
    case abort(epoch: UInt16)
    /// The cause is informational: the device latches whatever it says (see `EstopCause`).
    case estop(cause: EstopCause)
    case helloReply(HelloReply)
    case ack(Ack)
    case nak(Nak)
    case dotDone(DotDone)
    case status(Status)
    case refused(Refused)
    /// The answer to SPACING (protocol 1.2): the minimum spacing in force, µm (the larger of
    /// SPACING's and the device's own), and how many recent skin entries each new dot is
    /// compared with.
    case spacingReply(minimumSpacingMicrometres: UInt32, ringSize: UInt8)

    /// ESTOP with a known fault code as its cause (what a host sends).
    public static func estop(cause: FaultCode) -> Message {
        .estop(cause: EstopCause(cause))
    }

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .statusRequest: .statusRequest
        case .arm: .arm
        case .clear: .clear
        case .pace: .pace
        case .spacing: .spacing
        case .heartbeat: .heartbeat
        case .dot: .dot
        case .hold: .hold
        case .resume: .resume
        case .abort: .abort
        case .estop: .estop
        case .helloReply: .helloReply
        case .ack: .ack
        case .nak: .nak
        case .dotDone: .dotDone
        case .status: .status
        case .refused: .refused
        case .spacingReply: .spacingReply
        }
    }

    /// True for frames the device handles before its queue (GRBL-style real-time commands).
    public var isPriority: Bool {
        switch self {
        case .hold, .resume, .abort, .estop, .statusRequest, .clear, .pace, .spacing, .heartbeat: true
        default: false
        }
    }
}

// MARK: - Wire layouts (firmware-protocol.md §4)
//
// Each payload's fields, in wire order, with their kinds and their names in the spec: the one
// declaration length, encoding and decoding follow from (WireLayout.swift has the walkers).

extension Message {
    /// The message of `type` with every payload field zero: what decoding fills in.
    static func zero(_ type: MessageType) -> Message {
        switch type {
        case .hello: .hello(Hello())
        case .statusRequest: .statusRequest
        case .arm: .arm
        case .clear: .clear
        case .pace: .pace(minimumIntervalMilliseconds: 0)
        case .spacing: .spacing(minimumSpacingMicrometres: 0)
        case .heartbeat: .heartbeat
        case .dot: .dot(DotCommand())
        case .hold: .hold(epoch: 0)
        case .resume: .resume(epoch: 0, nextSeq: 0)
        case .abort: .abort(epoch: 0)
        case .estop: .estop(cause: EstopCause(rawValue: 0))
        case .helloReply: .helloReply(HelloReply())
        case .ack: .ack(Ack())
        case .nak: .nak(Nak())
        case .dotDone: .dotDone(DotDone())
        case .status: .status(Status())
        case .refused: .refused(Refused())
        case .spacingReply: .spacingReply(minimumSpacingMicrometres: 0, ringSize: 0)
        }
    }

    /// Walks the payload: the layouts of the messages without a struct of their own, and the
    /// dispatch to those with one.
    mutating func walkPayload<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        switch self {
        case .statusRequest, .arm, .clear, .heartbeat:
            break
        case .pace(var interval):
            try w.u16(&interval, "min_dot_interval_ms")
            self = .pace(minimumIntervalMilliseconds: interval)
        case .spacing(var spacing):
            try w.u32(&spacing, "min_spacing_um")
            self = .spacing(minimumSpacingMicrometres: spacing)
        case .hold(var epoch):
            try w.u16(&epoch, "epoch")
            self = .hold(epoch: epoch)
        case .resume(var epoch, var nextSeq):
            try w.u16(&epoch, "epoch")
            try w.u8(&nextSeq, "next_seq")
            self = .resume(epoch: epoch, nextSeq: nextSeq)
        case .abort(var epoch):
            try w.u16(&epoch, "epoch")
            self = .abort(epoch: epoch)
        case .estop(var cause):
            try w.raw(&cause, "cause")  // any byte: `EstopCause(rawValue:)` refuses none
            self = .estop(cause: cause)
        case .spacingReply(var spacing, var ringSize):
            try w.u32(&spacing, "min_spacing_um")
            try w.u8(&ringSize, "ring_size")
            self = .spacingReply(minimumSpacingMicrometres: spacing, ringSize: ringSize)
        case .hello(var m): try m.walkFields(&w); self = .hello(m)
        case .dot(var m): try m.walkFields(&w); self = .dot(m)
        case .helloReply(var m): try m.walkFields(&w); self = .helloReply(m)
        case .ack(var m): try m.walkFields(&w); self = .ack(m)
        case .nak(var m): try m.walkFields(&w); self = .nak(m)
        case .dotDone(var m): try m.walkFields(&w); self = .dotDone(m)
        case .status(var m): try m.walkFields(&w); self = .status(m)
        case .refused(var m): try m.walkFields(&w); self = .refused(m)
        }
    }
}

extension Hello: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u8(&versionMajor, "version_major")
        try w.u8(&versionMinor, "version_minor")
        try w.u16(&requestedLeaseMilliseconds, "requested_lease_ms")
        try w.u32(&hostNonce, "host_nonce")
    }
}

extension DeviceLimits: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u16(&depthMinMicrometres, "depth_min_um")
        try w.u16(&depthMaxMicrometres, "depth_max_um")
        try w.u32(&dwellMinMicroseconds, "dwell_min_us")
        try w.u32(&dwellMaxMicroseconds, "dwell_max_us")
        try w.u32(&travelXMicrometres, "travel_x_um")
        try w.u32(&travelYMicrometres, "travel_y_um")
        try w.u32(&travelSpeedMicrometresPerSecond, "travel_speed_um_per_s")
        try w.u32(&descendMicroseconds, "descend_us")
        try w.u32(&retractMicroseconds, "retract_us")
    }
}

extension HelloReply: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u8(&versionMajor, "version_major")
        try w.u8(&versionMinor, "version_minor")
        try w.raw(&capabilities, "capabilities")
        try w.u32(&bootID, "boot_id")
        try w.ascii(&firmwareID, "firmware_id")
        try w.u8(&queueCapacity, "queue_capacity")
        try w.u16(&leaseMilliseconds, "lease_ms")
        try limits.walkFields(&w)
        try w.u32(&hostNonce, "host_nonce")
        try w.u32(&doneCount, "done_count")
        try w.u32(&lastDoneDotID, "last_done_dot_id")
    }
}

extension DotCommand: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u32(&dotID, "dot_id")
        try w.u16(&epoch, "epoch")
        try w.i32(&xMicrometres, "x_um")
        try w.i32(&yMicrometres, "y_um")
        try w.u16(&depthMicrometres, "depth_um")
        try w.u32(&dwellMicroseconds, "dwell_us")
    }
}

extension Ack: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u8(&ackSeq, "ack_seq")
        try w.u8(&freeSlots, "free_slots")
        try w.u16(&epoch, "epoch")
    }
}

extension Nak: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u8(&expectedSeq, "expected_seq")
        try w.raw(&reason, "reason")
        try w.u8(&freeSlots, "free_slots")
    }
}

extension DotDone: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u8(&dotSeq, "dot_seq")
        try w.u32(&dotID, "dot_id")
        try w.u32(&doneCount, "done_count")
        try w.u64(&deviceTimeMicroseconds, "device_time_us")
    }
}

extension Status: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.raw(&state, "state")
        try w.raw(&fault, "fault")
        try w.u8(&queueDepth, "queue_depth")
        try w.u8(&freeSlots, "free_slots")
        try w.u16(&epoch, "epoch")
        try w.u8(&ackSeq, "ack_seq")
        try w.u8(&lastDoneSeq, "last_done_seq")
        try w.u32(&lastDoneDotID, "last_done_dot_id")
        try w.u32(&doneCount, "done_count")
        try w.u32(&currentDotID, "current_dot_id")
        try w.flag(&needleRetracted, "needle_retracted")
        try w.u16(&paceMilliseconds, "pace_ms")
    }
}

extension Refused: WirePayload {
    init() {}
    mutating func walkFields<W: WireWalker>(_ w: inout W) throws(W.Failure) {
        try w.u8(&seq, "seq")
        try w.u32(&dotID, "dot_id")
        try w.raw(&code, "code")
        try w.i32(&value, "value")
        try w.raw(&state, "state")
        try w.raw(&fault, "fault")
    }
}

/// Why a frame could not be decoded. Every case is a reason to discard the frame, never to guess.
public enum DecodeError: Error, Sendable, Hashable {
    case cobs
    /// More bytes than the largest frame arrived without a delimiter (garbage on the line).
    case oversized
    case tooShort(Int)
    case crcMismatch(expected: UInt32, actual: UInt32)
    case unknownType(UInt8)
    case wrongLength(MessageType, expected: Int, actual: Int)
    case truncated
    /// A field's value its table does not define, by the field's name in §4.
    case invalidField(WireFieldName)
}
