import Foundation
import XCTest

@testable import FirmwareProtocol

/// Lists a layout's fields as firmware-protocol.md §4 writes them: offset, name, type.
struct LayoutRecorder: WireWalker {
    typealias Failure = Never
    struct Field: Equatable, CustomStringConvertible {
        var offset: Int
        var name: String
        var type: String
        var description: String { "\(offset) \(name) \(type)" }
    }
    var fields: [Field] = []
    var offset = 0

    mutating func add(_ name: StaticString, _ type: String, _ size: Int) {
        fields.append(Field(offset: offset, name: "\(name)", type: type))
        offset += size
    }
    mutating func integer<T: FixedWidthInteger>(_ value: inout T, _ name: StaticString) {
        add(name, "\(T.isSigned ? "i" : "u")\(T.bitWidth)", T.bitWidth / 8)
    }
    mutating func raw<R: RawRepresentable>(_ value: inout R, _ name: StaticString) where R.RawValue: FixedWidthInteger {
        var rawValue = value.rawValue
        integer(&rawValue, name)
    }
    mutating func flag(_ value: inout Bool, _ name: StaticString) { add(name, "u8", 1) }
    mutating func ascii(_ value: inout FirmwareID, _ name: StaticString) {
        add(name, "\(FirmwareID.fieldLength) bytes", FirmwareID.fieldLength)
    }

    static func walk(_ type: MessageType) -> LayoutRecorder {
        var recorder = LayoutRecorder()
        var message = Message.zero(type)
        message.walkPayload(&recorder)
        return recorder
    }
}

/// firmware-protocol.md §4, read back: each message's payload length (the summary table) and
/// fields (the per-message tables and `Payload: \`name: type\`` lines).
enum SpecLayouts {
    static func text() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("firmware-protocol.md"), encoding: .utf8)
        guard let begin = text.range(of: "## 4. Messages"), let end = text.range(of: "## 5. States")
        else { throw XCTSkip("section 4 missing") }
        return String(text[begin.upperBound..<end.lowerBound])
    }

    /// The summary table: `| 0x10 | DOT | … | 20 |` → type → payload bytes.
    static func payloadBytes(_ section: String) -> [MessageType: Int] {
        var result: [MessageType: Int] = [:]
        for line in section.split(separator: "\n") where line.hasPrefix("| 0x") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if let code = UInt8(cells[0].dropFirst(2), radix: 16), let type = MessageType(rawValue: code),
               let bytes = Int(cells[cells.count - 1]) {
                result[type] = bytes
            }
        }
        return result
    }

    /// Each `### NAME (0xNN), …` section's fields: its table's rows (offset, name, type), or the
    /// fields of a `Payload:` line (all the heading's types) or a `NAME payload:` line (that one).
    static func fields(_ section: String) -> [MessageType: [LayoutRecorder.Field]] {
        var result: [MessageType: [LayoutRecorder.Field]] = [:]
        for part in section.components(separatedBy: "\n### ").dropFirst() {
            let lines = part.split(separator: "\n", omittingEmptySubsequences: false)
            let heading = String(lines[0])
            let types = matches(of: #"(\w+) \(0x([0-9A-Fa-f]{2})\)"#, in: heading).compactMap { groups in
                UInt8(groups[1], radix: 16).flatMap(MessageType.init(rawValue:)).map { (name: groups[0], type: $0) }
            }
            for entry in types { result[entry.type] = [] }
            for line in lines.dropFirst() {
                let cells = line.split(separator: "|", omittingEmptySubsequences: false)
                    .map { $0.trimmingCharacters(in: .whitespaces) }
                if cells.count > 4, let offset = Int(cells[1]), let first = types.first {
                    result[first.type, default: []].append(LayoutRecorder.Field(offset: offset, name: cells[2], type: cells[3]))
                }
                guard let payload = line.range(of: "payload:", options: .caseInsensitive) else { continue }
                let owner = line[..<payload.lowerBound].trimmingCharacters(in: .whitespaces)
                var offset = 0
                var fields: [LayoutRecorder.Field] = []
                for groups in matches(of: #"`(\w+): ([ui])(\d+)`"#, in: String(line[payload.upperBound...])) {
                    fields.append(LayoutRecorder.Field(offset: offset, name: groups[0], type: groups[1] + groups[2]))
                    offset += Int(groups[2])! / 8
                }
                for entry in types where owner.isEmpty || owner == entry.name { result[entry.type] = fields }
            }
        }
        return result
    }

    static func matches(of pattern: String, in text: String) -> [[String]] {
        let regex = try! NSRegularExpression(pattern: pattern)
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { match in
            (1..<match.numberOfRanges).map { String(text[Range(match.range(at: $0), in: text)!]) }
        }
    }
}

/// The declared layouts (Messages.swift, "Wire layouts"): what they say matches the spec, the
/// encoder and the decoder, and what the decoder refuses.
final class LayoutTests: XCTestCase {
    func testEveryLayoutMatchesTheSpecTables() throws {
        let section = try SpecLayouts.text()
        let lengths = SpecLayouts.payloadBytes(section)
        let fields = SpecLayouts.fields(section)
        XCTAssertEqual(Set(lengths.keys), Set(MessageType.allCases), "§4 summary table")
        XCTAssertEqual(Set(fields.keys), Set(MessageType.allCases), "§4 message sections")
        // The reader found the tables and the payload lines, not nothing.
        XCTAssertEqual(fields.values.map(\.count).reduce(0, +), 66)
        XCTAssertEqual(fields[.resume]?.map(\.description), ["0 epoch u16", "2 next_seq u8"])
        XCTAssertEqual(fields[.estop]?.map(\.description), ["0 cause u8"])
        XCTAssertEqual(fields[.helloReply]?.last?.description, "69 last_done_dot_id u32")
        for type in MessageType.allCases {
            XCTAssertEqual(Frame.payloadLength(of: type), lengths[type], "\(type): payload bytes")
            let layout = LayoutRecorder.walk(type)
            XCTAssertEqual(layout.fields, fields[type] ?? [], "\(type): fields")
            XCTAssertEqual(layout.offset, Frame.payloadLength(of: type), "\(type): the layout's length")
        }
    }

    /// A payload one byte short, one byte long or empty is `wrongLength` before any field is read,
    /// whatever its bytes; fewer than 6 bytes is `tooShort`.
    func testTruncatedAndOverlongPayloadsAreRefused() {
        var r = SeededRandom(seed: 0x5EED_0011)
        for type in MessageType.allCases {
            let expected = Frame.payloadLength(of: type)
            let payload = payloadBytes(of: Frame(RandomMessages.message(type, &r)))
            var variants = [payload + [0xFF], payload + payload, []]
            if expected > 0 { variants += [Array(payload.dropLast()), Array(payload.prefix(1))] }
            for variant in variants where variant.count != expected {
                XCTAssertThrowsError(try Frame.decode(raw: raw(type.rawValue, variant)[...]), "\(type) \(variant.count)") {
                    XCTAssertEqual($0 as? DecodeError, .wrongLength(type, expected: expected, actual: variant.count))
                }
            }
        }
        XCTAssertThrowsError(try Frame.decode(raw: raw(MessageType.dot.rawValue, [])[...])) {
            XCTAssertEqual($0 as? DecodeError, .wrongLength(.dot, expected: 20, actual: 0))
        }
        for count in 0..<Frame.overhead {
            XCTAssertThrowsError(try Frame.decode(raw: Array(repeating: 0x10, count: count)[...])) {
                XCTAssertEqual($0 as? DecodeError, .tooShort(count))
            }
        }
        XCTAssertThrowsError(try Frame.decode(raw: raw(0x7E, [])[...])) {
            XCTAssertEqual($0 as? DecodeError, .unknownType(0x7E))
        }
    }

    /// Every validated field refuses a value its table does not define, by its spec name; ESTOP's
    /// cause, capabilities and plain integers take any value.
    func testValidatedFieldsRefuseUndefinedValuesByName() {
        let status = Frame(.status(Status(state: .ready, fault: .none, queueDepth: 0, freeSlots: 1, epoch: 0, ackSeq: 0,
                                          lastDoneSeq: 0, lastDoneDotID: 0, doneCount: 0, currentDotID: 0,
                                          needleRetracted: true)))
        let refused = Frame(.refused(Refused(seq: 1, dotID: 2, code: .tooClose, value: 3, state: .fault, fault: .dotOutOfLimits)))
        let nak = Frame(.nak(Nak(expectedSeq: 1, reason: .queueFull, freeSlots: 0)))
        let reply = GoldenExamples.all.first { $0.name == "HELLO_REPLY" }!.frame
        let cases: [(Frame, offset: Int, value: UInt8, field: WireFieldName)] = [
            (status, 0, 6, "state"), (status, 1, 9, "fault"), (status, 20, 2, "needle_retracted"),
            (refused, 5, 0, "code"), (refused, 5, 13, "code"), (refused, 10, 6, "state"), (refused, 11, 9, "fault"),
            (nak, 1, 0, "reason"), (nak, 1, 0xFF, "reason"),
            (reply, 10, 0x1F, "firmware_id"), (reply, 12, 0x7F, "firmware_id"),
        ]
        for (frame, offset, value, field) in cases {
            var payload = payloadBytes(of: frame)
            payload[offset] = value
            XCTAssertThrowsError(try Frame.decode(raw: raw(frame.message.type.rawValue, payload)[...]), "\(field)") {
                XCTAssertEqual($0 as? DecodeError, .invalidField(field), "\(frame.message.type) offset \(offset)")
            }
        }
        // NUL padding ends the firmware id; what follows the first NUL is not read.
        var payload = payloadBytes(of: reply)
        payload[25] = 0x01
        XCTAssertNoThrow(try Frame.decode(raw: raw(MessageType.helloReply.rawValue, payload)[...]))
    }

    /// The encoder cuts a firmware id longer than its 16 bytes (the decoder reads what was sent).
    func testALongFirmwareIDIsCutToItsField() throws {
        guard case .helloReply(var reply) = GoldenExamples.all.first(where: { $0.name == "HELLO_REPLY" })!.frame.message
        else { return XCTFail("golden HELLO_REPLY") }
        reply.firmwareID = "0123456789abcdefXYZ"
        let decoded = try Frame.decode(cobsBlock: Frame(.helloReply(reply)).encoded().dropLast())
        reply.firmwareID = "0123456789abcdef"
        XCTAssertEqual(decoded, Frame(.helloReply(reply)))
    }

    /// `invalidField` carries a `StaticString` now (no String in the firmware) and prints as the
    /// `String` it replaced did: the host's log lines are unchanged.
    func testAnInvalidFieldPrintsAsBefore() {
        XCTAssertEqual("\(DecodeError.invalidField("state"))", #"invalidField("state")"#)
        XCTAssertEqual(DecodeError.invalidField("needle_retracted"), .invalidField("needle_retracted"))
        XCTAssertNotEqual(DecodeError.invalidField("state"), .invalidField("fault"))
        XCTAssertEqual(Set<WireFieldName>(["state", "state", "fault"]).count, 2)
    }

    /// The firmware id is the wire field's 16 bytes: text up to the first NUL, a longer literal or
    /// text cut to 16, quoted inside a printed message as the `String` was.
    func testTheFirmwareIDIsItsSixteenBytes() {
        let id: FirmwareID = "smp-sim 1.0"
        XCTAssertEqual(id.text, "smp-sim 1.0")
        XCTAssertEqual(id.count, 11)
        XCTAssertEqual(id, FirmwareID("smp-sim 1.0"))
        XCTAssertEqual(FirmwareID("0123456789abcdefXYZ").text, "0123456789abcdef")
        XCTAssertEqual(("0123456789abcdefXYZ" as FirmwareID).text, "0123456789abcdef")
        XCTAssertEqual(FirmwareID().text, "")
        XCTAssertTrue(id.isPrintableASCII)
        XCTAssertFalse(FirmwareID("tab\there").isPrintableASCII)
        XCTAssertEqual(String(reflecting: id), #""smp-sim 1.0""#)
    }

    /// The payload bytes `frame` encodes to.
    private func payloadBytes(of frame: Frame) -> [UInt8] {
        Array(COBS.decode(frame.encoded().dropLast())!.dropFirst(2).dropLast(4))
    }

    /// type · seq 0 · payload · a correct CRC-32C.
    private func raw(_ type: UInt8, _ payload: [UInt8]) -> [UInt8] {
        let body = [type, 0] + payload
        let crc = CRC32C.checksum(body)
        return body + (0..<4).map { UInt8(truncatingIfNeeded: crc >> (8 * $0)) }
    }
}
