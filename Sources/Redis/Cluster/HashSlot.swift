/// Redis Cluster's key → slot mapping: CRC16-CCITT (XModem) of the key, or of its hash tag, modulo 16384.
///
/// The hash tag is the part between the first `{` and the next `}`, when that part is not empty; `{}` and a
/// `{` without a closing `}` leave the whole key hashed.
public enum HashSlot {
    /// The number of slots in a Redis Cluster.
    public static let count = 16384

    /// The slot of a key given as bytes.
    public static func slot(forKey key: UnsafeRawBufferPointer) -> UInt16 {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")),
            close > open + 1
        {
            hashed = key[(open + 1)..<close]
        }
        var crc: UInt16 = 0
        for byte in hashed {
            crc = (crc << 8) ^ crcTable[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc & 0x3FFF
    }

    /// The slot of a key given as text (hashed as UTF-8).
    public static func slot(forKey key: String) -> UInt16 {
        var key = key
        return key.withUTF8 { slot(forKey: UnsafeRawBufferPointer($0)) }
    }

    private static let crcTable: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = (crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
