/// Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999).
///
/// Every frame on the wire is COBS-encoded and followed by a single 0x00 delimiter. Because an
/// encoded frame never contains 0x00, a receiver that lost sync (garbage, a dropped byte, a
/// device reset mid-frame) resynchronises by discarding bytes up to and including the next 0x00;
/// at most one frame is lost. Overhead: one byte per 254 bytes of payload, plus the delimiter.
public enum COBS {
    /// Encodes `input`; the result holds no zero byte and does not include the delimiter.
    @inlinable
    public static func encode(_ input: some Collection<UInt8>, into output: inout [UInt8]) {
        var codeIndex = output.count
        output.append(0)
        var code: UInt8 = 1
        for byte in input {
            if byte == 0 {
                output[codeIndex] = code
                codeIndex = output.count
                output.append(0)
                code = 1
            } else {
                output.append(byte)
                code += 1
                if code == 0xFF {
                    output[codeIndex] = code
                    codeIndex = output.count
                    output.append(0)
                    code = 1
                }
            }
        }
        output[codeIndex] = code
    }

    /// Decodes one COBS block (delimiter excluded). Returns nil when the block is malformed:
    /// a zero byte inside it or a code that runs past its end.
    @inlinable
    public static func decode(_ input: some Collection<UInt8>) -> [UInt8]? {
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: input.count) { buffer, count in
            if let decoded = decode(input, into: buffer) { count = decoded } else { valid = false }
        }
        return valid ? output : nil
    }

    /// Decodes one COBS block (delimiter excluded) into `output` without allocating; returns the
    /// number of bytes decoded, nil when the block is malformed (as `decode(_:)`). An `output` of
    /// `input.count` bytes always suffices: a block never decodes to more bytes than it has.
    @inlinable
    public static func decode(_ input: some Collection<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>) -> Int? {
        precondition(output.count >= input.count, "COBS.decode: output smaller than the block")
        var count = 0
        var index = input.startIndex
        while index != input.endIndex {
            let code = input[index]
            if code == 0 { return nil }
            index = input.index(after: index)
            for _ in 1..<Int(code) {
                guard index != input.endIndex else { return nil }
                let byte = input[index]
                if byte == 0 { return nil }
                output[count] = byte
                count += 1
                index = input.index(after: index)
            }
            if code != 0xFF && index != input.endIndex {
                output[count] = 0
                count += 1
            }
        }
        return count
    }
}
