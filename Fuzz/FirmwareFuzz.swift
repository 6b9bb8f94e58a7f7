// libFuzzer target for the firmware core: `make fuzz`. Built by swiftc with -sanitize=fuzzer,address
// together with Sources/FirmwareProtocol/*.swift and Sources/FirmwareCore/*.swift (no Foundation).
//
// The input is what a host — or a broken wire — sends: raw bytes. They reach the firmware one
// 0x00-delimited block at a time, 10 ms of device time apart; then a well-behaved host only keeps
// the lease (a STATUS_REQUEST every 20 ms) for up to 10 s, until everything queued has run. Properties checked on every dot the firmware
// reports injected, beyond "does not crash":
//  - inside the device's own limits: depth, dwell (delivered ≤ asked), travel on both axes;
//  - none completed while the device is latched (ESTOP, a fault), from the latch to a CLEAR;
//  - none completed twice from one frame (boot id, epoch, seq): retransmissions are not re-run;
//  - skin entries at least the device's minimum interval apart (PACE can only lengthen it);
//  - a completed dot at least the minimum spacing from the last 64 completed on this boot.

@_cdecl("LLVMFuzzerTestOneInput")
public func firmwareFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    let configuration = FirmwareConfiguration()
    var firmware = Firmware(configuration: configuration, at: 0)
    var check = InjectionCheck(configuration: configuration)
    var now: UInt64 = 0

    var start = 0
    for index in 0..<size where input[index] == 0 || index == size - 1 {
        now += 10_000
        check.inspect(firmware.receive(input[start...index], at: now))
        start = index + 1
    }
    for _ in 0..<500 {
        // Only the queue injects: once it is empty and nothing but the lease is due, the rest of
        // the tail could not inject anything (this keeps the target at thousands of runs/s).
        if firmware.snapshot.queueDepth == 0, firmware.nextDeadline == firmware.leaseExpiry { break }
        now += 20_000
        check.inspect(firmware.receive(statusRequest, at: now))
    }
    return 0
}

/// STATUS_REQUEST, seq 2 (firmware-protocol.md §8): the heartbeat of the tail.
let statusRequest: [UInt8] = [0x02, 0x02, 0x05, 0x3C, 0x47, 0x24, 0xD6, 0x00]

struct InjectionCheck {
    let configuration: FirmwareConfiguration
    var latched = false
    var completedFrames: Set<UInt64> = []
    var lastSkinEntry: (boot: UInt32, at: UInt64)?
    var recent: [(boot: UInt32, x: Int64, y: Int64)] = []

    init(configuration: FirmwareConfiguration) { self.configuration = configuration }

    mutating func inspect(_ output: FirmwareOutput) {
        for event in output.events {
            switch event {
            case .stateChanged(let state, _):
                latched = state.isLatched
            case .injected(let dot):
                inspect(dot)
            default:
                break
            }
        }
    }

    mutating func inspect(_ dot: InjectedDot) {
        let limits = configuration.limits
        precondition(dot.depthMicrometres >= limits.depthMinMicrometres
                     && dot.depthMicrometres <= limits.depthMaxMicrometres, "depth outside the device's limits")
        precondition(dot.dwellMicroseconds >= limits.dwellMinMicroseconds
                     && dot.dwellMicroseconds <= limits.dwellMaxMicroseconds, "dwell outside the device's limits")
        precondition(dot.dwellDeliveredMicroseconds <= UInt64(dot.dwellMicroseconds), "more dwell than asked")
        precondition(dot.xMicrometres.magnitude <= limits.travelXMicrometres
                     && dot.yMicrometres.magnitude <= limits.travelYMicrometres, "outside the travel")

        if let last = lastSkinEntry, last.boot == dot.bootID {
            precondition(dot.skinEntrySimulatedMicroseconds >= last.at
                         + UInt64(configuration.minimumDotIntervalMicroseconds), "skin entries closer than the pace")
        }
        lastSkinEntry = (dot.bootID, dot.skinEntrySimulatedMicroseconds)

        guard dot.outcome == .done else { return }
        precondition(!latched, "a dot completed while the device was latched")
        let frame = UInt64(dot.bootID) << 32 | UInt64(dot.epoch) << 8 | UInt64(dot.seq)
        precondition(completedFrames.insert(frame).inserted, "one DOT frame completed twice")
        let minimum = Int64(configuration.minimumSpacingMicrometres)
        for earlier in recent where earlier.boot == dot.bootID {
            let dx = Int64(dot.xMicrometres) - earlier.x, dy = Int64(dot.yMicrometres) - earlier.y
            precondition(dx * dx + dy * dy >= minimum * minimum, "a dot closer than the spacing to a recent one")
        }
        recent.append((dot.bootID, Int64(dot.xMicrometres), Int64(dot.yMicrometres)))
        if recent.count > 64 { recent.removeFirst() }
    }
}
