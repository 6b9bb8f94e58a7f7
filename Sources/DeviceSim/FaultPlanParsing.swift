import FirmwareCore
import Foundation
import SMPSystem

/// The host side of `FaultPlan`: the SPEC string and JSON scenario parsers (Foundation), kept out
/// of the firmware core so that it stays Embedded-Swift-clean.
extension FaultPlan: CustomStringConvertible {
    /// Parses a SPEC string (see the type's documentation). An empty string is no faults.
    public init(spec: String) throws(FaultPlanError) {
        self.init()
        var seen: Set<String> = []
        for rawItem in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let item = rawItem.trimmingCharacters(in: .whitespaces)
            if item.isEmpty { continue }
            try apply(item: item, seen: &seen)
        }
    }

    /// Parses a JSON scenario (an object with the SPEC keys).
    public init(jsonScenario data: Data) throws(FaultPlanError) {
        self.init()
        let object: [String: ScenarioValue]
        do {
            object = try JSONDecoder().decode([String: ScenarioValue].self, from: data)
        } catch {
            throw FaultPlanError(item: "scenario", reason: "not a JSON object of fault items: \(error)")
        }
        var seen: Set<String> = []
        for key in object.keys.sorted() {
            for value in object[key]!.flattened {
                try apply(item: "\(key)=\(value)", seen: &seen)
            }
        }
    }

    /// Reads a JSON scenario file.
    public static func load(scenarioFile path: String) throws(FaultPlanError) -> FaultPlan {
        switch RegularFile.read(path: path, maximumBytes: 1024 * 1024) {
        case .success(let bytes): return try FaultPlan(jsonScenario: Data(bytes))
        case .failure(let error): throw FaultPlanError(item: path, reason: "cannot read the scenario file: \(error)")
        }
    }

    private mutating func apply(item: String, seen: inout Set<String>) throws(FaultPlanError) {
        guard let equals = item.firstIndex(of: "=") else {
            throw FaultPlanError(item: item, reason: "expected KEY=VALUE")
        }
        let key = item[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
        let value = item[item.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        func fail(_ reason: String) -> FaultPlanError { FaultPlanError(item: item, reason: reason) }
        let repeatable = key.hasSuffix("-at")
        if !repeatable {
            guard seen.insert(key).inserted else { throw fail("'\(key)' given more than once") }
        }
        switch key {
        case "corrupt": corruptRate = try Self.rate(value, item)
        case "drop": dropRate = try Self.rate(value, item)
        case "duplicate": duplicateRate = try Self.rate(value, item)
        case "garbage": garbageRate = try Self.rate(value, item)
        case "delay-ack": ackDelayMicroseconds = try Self.duration(value, item)
        case "slow":
            guard let factor = Double(value), factor.isFinite, factor > 0 else {
                throw fail("FACTOR must be a number greater than 0, e.g. slow=2")
            }
            slowFactor = factor
        case "stall-at":
            let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw fail("expected stall-at=DOT:DURATION, e.g. stall-at=12:300ms") }
            let dot = try Self.dot(parts[0], item)
            guard stallAt[dot] == nil else { throw fail("a stall for dot \(dot) is already planned") }
            stallAt[dot] = try Self.duration(parts[1], item)
        case "reset-at": resetAt.insert(try Self.dot(value, item))
        case "disconnect-at": disconnectAt.insert(try Self.dot(value, item))
        case "estop-at": estopAt.insert(try Self.dot(value, item))
        case "contact-loss-at": contactLossAt.insert(try Self.dot(value, item))
        case "over-depth-at": overDepthAt.insert(try Self.dot(value, item))
        case "ignore-pace-at": ignorePaceAt.insert(try Self.dot(value, item))
        default:
            throw fail("unknown fault '\(key)'; known: corrupt, drop, duplicate, garbage, delay-ack, stall-at, "
                       + "reset-at, disconnect-at, estop-at, contact-loss-at, over-depth-at, ignore-pace-at, slow")
        }
    }

    static func rate(_ text: String, _ item: String) throws(FaultPlanError) -> Double {
        let value: Double?
        if text.hasSuffix("%") {
            value = Double(text.dropLast()).map { $0 / 100 }
        } else {
            value = Double(text)
        }
        guard let value, value.isFinite, value >= 0, value <= 1 else {
            throw FaultPlanError(item: item, reason: "RATE must be a probability from 0 to 1 (0.05) or a percentage (5%)")
        }
        return value
    }

    /// Microseconds.
    static func duration(_ text: String, _ item: String) throws(FaultPlanError) -> UInt64 {
        let units: [(String, Double)] = [("ms", 1_000), ("us", 1), ("µs", 1), ("s", 1_000_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let number = Double(text.dropLast(suffix.count)), number.isFinite, number >= 0,
               number * scale < 3_600_000_000 {
                return UInt64((number * scale).rounded())
            }
            break
        }
        throw FaultPlanError(item: item, reason: "DURATION must be a number with a unit, e.g. 30ms, 1.5s or 800us (at most an hour)")
    }

    static func dot(_ text: String, _ item: String) throws(FaultPlanError) -> UInt32 {
        guard let dot = UInt32(text.trimmingCharacters(in: .whitespaces)), dot > 0 else {
            throw FaultPlanError(item: item, reason: "DOT must be a dot id from 1 to 4294967295")
        }
        return dot
    }

    /// The plan as a SPEC string (canonical order), parseable by `init(spec:)`.
    public var description: String {
        var items: [String] = []
        func rate(_ key: String, _ value: Double) { if value > 0 { items.append("\(key)=\(value)") } }
        rate("corrupt", corruptRate)
        rate("drop", dropRate)
        rate("duplicate", duplicateRate)
        rate("garbage", garbageRate)
        if ackDelayMicroseconds > 0 { items.append("delay-ack=\(ackDelayMicroseconds)us") }
        for (dot, duration) in stallAt { items.append("stall-at=\(dot):\(duration)us") }  // in dot id order
        for dot in resetAt.sorted() { items.append("reset-at=\(dot)") }
        for dot in disconnectAt.sorted() { items.append("disconnect-at=\(dot)") }
        for dot in estopAt.sorted() { items.append("estop-at=\(dot)") }
        for dot in contactLossAt.sorted() { items.append("contact-loss-at=\(dot)") }
        for dot in overDepthAt.sorted() { items.append("over-depth-at=\(dot)") }
        for dot in ignorePaceAt.sorted() { items.append("ignore-pace-at=\(dot)") }
        if slowFactor != 1 { items.append("slow=\(slowFactor)") }
        return items.joined(separator: ",")
    }
}

/// A fault plan that could not be parsed: names the offending item.
public struct FaultPlanError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The item as written (`drop=abc`), or the scenario file.
    public var item: String
    public var reason: String

    public init(item: String, reason: String) {
        self.item = item
        self.reason = reason
    }

    public var description: String { "fault plan item '\(item)': \(reason)" }
}

/// A JSON scenario value: a number, a string, or a list of them.
private enum ScenarioValue: Decodable {
    case integer(Int64)
    case number(Double)
    case string(String)
    case list([ScenarioValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else {
            self = .list(try container.decode([ScenarioValue].self))
        }
    }

    var flattened: [String] {
        switch self {
        case .integer(let value): ["\(value)"]
        case .number(let value): ["\(value)"]
        case .string(let value): [value]
        case .list(let values): values.flatMap(\.flattened)
        }
    }
}
