// libFuzzer target: the machine-configuration loader (`make fuzz`). Any text: the loader either
// returns a configuration whose every value is inside its documented range, or throws an error
// naming the file and at least one issue, each with a key path. Never a crash, never a hang.
import SMPMachine
import SMPPlan

@_cdecl("LLVMFuzzerTestOneInput")
public func machineConfigFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let configuration = try MachineConfigurationLoader.load(text: text, sourceName: "machine.toml")
        check(configuration)
    } catch {
        precondition(error.description.hasPrefix("machine.toml: "), "an error without the file name: \(error)")
        precondition(!error.issues.isEmpty || error.isUnreadable, "an error without an issue: \(error)")
    }
    return 0
}

/// The ranges docs/machine-config.md documents, re-checked on what was loaded.
func check(_ configuration: MachineConfiguration) {
    let envelope = configuration.envelope
    let builtIn = SafetyEnvelope.builtIn
    precondition(envelope.depthMicrometres.lowerBound >= builtIn.depthMicrometres.lowerBound
                 && envelope.depthMicrometres.upperBound <= builtIn.depthMicrometres.upperBound,
                 "depth outside the built-in limits: \(envelope.depthMicrometres)")
    precondition(envelope.dwellMicroseconds.lowerBound >= builtIn.dwellMicroseconds.lowerBound
                 && envelope.dwellMicroseconds.upperBound <= builtIn.dwellMicroseconds.upperBound,
                 "dwell outside the built-in limits: \(envelope.dwellMicroseconds)")
    precondition(envelope.travelXMicrometres <= builtIn.travelXMicrometres
                 && envelope.travelYMicrometres <= builtIn.travelYMicrometres, "travel beyond the built-in limits")
    precondition(envelope.minimumSpacingMicrometres >= builtIn.minimumSpacingMicrometres, "spacing below the built-in minimum")
    precondition(envelope.maximumDotsPerSecond > 0 && envelope.maximumDotsPerSecond <= builtIn.maximumDotsPerSecond,
                 "rate outside (0, built-in]: \(envelope.maximumDotsPerSecond)")
    precondition(MachineConfiguration.leaseMillisecondsRange.contains(configuration.leaseMilliseconds), "lease out of range")
    if let priority = configuration.realtimePriority {
        precondition(priority == 0 || MachineConfiguration.realtimePriorityRange.contains(priority), "priority out of range")
    }
}
