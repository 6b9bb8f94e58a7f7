/// CRC-32C (Castagnoli), as catalogued in the CRC RevEng catalogue as "CRC-32/ISCSI":
/// width 32, poly 0x1EDC6F41 (reflected 0x82F63B78), init 0xFFFFFFFF, refin/refout true,
/// xorout 0xFFFFFFFF, check ("123456789") 0xE3069283.
///
/// Chosen over CRC-16/CCITT (Klipper) because a clinic link sees millions of frames per session
/// series and a 2^-16 undetected-error rate per corrupted frame is too high when the payload is a
/// needle depth. CRC-32C has Hamming distance 6 up to 5,243 bits, far beyond our longest frame.
public enum CRC32C {
    @usableFromInline static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var crc = UInt32(index)
        for _ in 0..<8 {
            crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
        }
        return crc
    }

    /// The CRC of `bytes`. Inlinable, as are the COBS and frame-decoding entry points: unspecialised
    /// generic code called from another module boxes every element — one malloc per byte
    /// (docs/performance.md, Codec).
    @inlinable
    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes {
                crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
            }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
