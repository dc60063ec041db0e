/// SHA-1, for the one place where Swift and Redis's Lua must agree on a hash: a chain state's bucket and a
/// message's content hash are hex digits of `redis.sha1hex`, which the trainer computes here so that Redis spends
/// no time on it. Not used for security.
public enum SHA1 {
    /// The 20-byte digest of `bytes`.
    public static func digest(_ bytes: some Collection<UInt8>) -> [UInt8] {
        let h = Self.words(bytes)
        var out: [UInt8] = []
        out.reserveCapacity(20)
        for word in [h.0, h.1, h.2, h.3, h.4] {
            out += [UInt8(word >> 24), UInt8(truncatingIfNeeded: word >> 16), UInt8(truncatingIfNeeded: word >> 8), UInt8(truncatingIfNeeded: word)]
        }
        return out
    }

    /// The digest as 40 lowercase hex digits, as `redis.sha1hex` writes it.
    public static func hex(_ bytes: some Collection<UInt8>) -> String {
        Self.hexDigits(Self.digest(bytes))
    }

    /// The first 32 bits of the digest (`tonumber(sha1hex(s):sub(1, 8), 16)` in Lua).
    public static func prefix32(_ bytes: some Collection<UInt8>) -> UInt32 {
        Self.words(bytes).0
    }

    /// The first 24 bits of the digest (`tonumber(sha1hex(s):sub(1, 6), 16)` in Lua): a chain state's hash.
    public static func prefix24(_ bytes: some Collection<UInt8>) -> UInt32 {
        Self.words(bytes).0 >> 8
    }

    /// The first 16 hex digits of the digest: a message's content hash.
    public static func prefixHex16(_ bytes: some Collection<UInt8>) -> String {
        let h = Self.words(bytes)
        return Self.hexDigits([
            UInt8(h.0 >> 24), UInt8(truncatingIfNeeded: h.0 >> 16), UInt8(truncatingIfNeeded: h.0 >> 8), UInt8(truncatingIfNeeded: h.0),
            UInt8(h.1 >> 24), UInt8(truncatingIfNeeded: h.1 >> 16), UInt8(truncatingIfNeeded: h.1 >> 8), UInt8(truncatingIfNeeded: h.1),
        ])
    }

    static func hexDigits(_ bytes: [UInt8]) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: bytes.count * 2) { buffer in
            digits.withUTF8Buffer { table in
                for (index, byte) in bytes.enumerated() {
                    buffer[2 * index] = table[Int(byte >> 4)]
                    buffer[2 * index + 1] = table[Int(byte & 0x0F)]
                }
            }
            return bytes.count * 2
        }
    }

    /// The five state words after hashing `bytes`, without allocating on the heap for short inputs: the padded
    /// message is assembled block by block in a 64-byte buffer.
    static func words(_ bytes: some Collection<UInt8>) -> (UInt32, UInt32, UInt32, UInt32, UInt32) {
        // Read through a buffer: iterating a generic collection byte by byte was most of the time on long inputs.
        if let words = bytes.withContiguousStorageIfAvailable(Self.words(buffer:)) { return words }
        return Array(bytes).withUnsafeBufferPointer(Self.words(buffer:))
    }

    private static func words(buffer bytes: UnsafeBufferPointer<UInt8>) -> (UInt32, UInt32, UInt32, UInt32, UInt32) {
        var h: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
        let length = bytes.count
        let bitLength = UInt64(length) * 8
        // Blocks: the message, 0x80, zeros, and the 64-bit length, rounded up to a multiple of 64 bytes.
        let blocks = (length + 8) / 64 + 1
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { block in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 80) { w in
                for index in 0..<blocks {
                    for offset in 0..<64 {
                        let position = index * 64 + offset
                        if position < length {
                            block[offset] = bytes[position]
                        } else if position == length {
                            block[offset] = 0x80
                        } else {
                            block[offset] = 0
                        }
                    }
                    if index == blocks - 1 {
                        for shift in 0..<8 { block[56 + shift] = UInt8(truncatingIfNeeded: bitLength >> UInt64(56 - 8 * shift)) }
                    }
                    Self.compress(block: block, schedule: w, state: &h)
                }
            }
        }
        return h
    }

    private static func compress(
        block: UnsafeMutableBufferPointer<UInt8>, schedule w: UnsafeMutableBufferPointer<UInt32>,
        state h: inout (UInt32, UInt32, UInt32, UInt32, UInt32)
    ) {
        for i in 0..<16 {
            let j = i * 4
            w[i] = UInt32(block[j]) << 24 | UInt32(block[j + 1]) << 16 | UInt32(block[j + 2]) << 8 | UInt32(block[j + 3])
        }
        for i in 16..<80 {
            let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w[i] = x << 1 | x >> 31
        }
        var (a, b, c, d, e) = h
        for i in 0..<80 {
            let f: UInt32
            let k: UInt32
            switch i {
            case 0..<20: f = (b & c) | (~b & d); k = 0x5A82_7999
            case 20..<40: f = b ^ c ^ d; k = 0x6ED9_EBA1
            case 40..<60: f = (b & c) | (b & d) | (c & d); k = 0x8F1B_BCDC
            default: f = b ^ c ^ d; k = 0xCA62_C1D6
            }
            let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
            e = d
            d = c
            c = b << 30 | b >> 2
            b = a
            a = temp
        }
        h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e)
    }
}
