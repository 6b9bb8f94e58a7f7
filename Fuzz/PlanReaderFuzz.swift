// libFuzzer target for the one-pass plan reader: `make fuzz`.
// Built by swiftc with -sanitize=fuzzer,address together with the reader's files of
// Sources/SMPPlanReader (PlanJSONReader, PlainNumber, and the Foundation decoder PlanDecoding with
// JSONDuplicateKeys, kept as the slow path), linked against SMPPlan and FirmwareProtocol.
//
// Properties checked on every input, beyond "does not crash or read outside the buffer":
//  - whatever the fast reader reads, the Foundation decoder reads too, finds no shape problem
//    in it (no issue, no repeated key, every dot an object) and reads the same raw document
//    (same fields, same numbers, same strings): so the resolver sees the same thing either way;
//  - a number the fast number parser reads is exactly `Double(_:)` of the same text.
import Foundation
import SMPPlan

@_cdecl("LLVMFuzzerTestOneInput")
public func planReaderFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)

    if let fast = PlanJSONReader.read(bytes) {
        switch PlanDecoding.decode(Data(bytes)) {
        case .failure(let failure):
            preconditionFailure("the fast reader read a file the Foundation decoder refuses: \(failure.issue)")
        case .success(let old):
            precondition(old.issues.isEmpty && old.unlistedErrors == 0 && old.isObject,
                         "the fast reader read a file with shape problems: \(old.issues)")
            precondition(!(old.dots.value?.contains { !$0.issues.isEmpty || !$0.isObject } ?? false),
                         "the fast reader read a dot with shape problems")
            precondition(fast == old, "the two readers read different documents")
        }
    }

    if let (value, length) = PlainNumber.parse(data, size) {
        let text = String(decoding: UnsafeBufferPointer(start: data, count: length), as: UTF8.self)
        guard let standard = Double(text) else { preconditionFailure("\(text): Double(_:) refuses it") }
        precondition(value.bitPattern == standard.bitPattern, "\(text): \(value) vs Double(_:) \(standard)")
    }
    return 0
}
