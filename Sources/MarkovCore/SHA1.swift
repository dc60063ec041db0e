/// SHA-1, for the one place where Swift and Redis's Lua must agree on a hash: a chain state's bucket and a
/// message's content hash are the first hex digits of `redis.sha1hex`, which the trainer computes here instead of
/// spending Redis's time on it. Not used for security.
public enum SHA1 {
    /// The 20-byte digest of `bytes`.
    public static func digest(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var h: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
        var message = Array(bytes)
        let bitLength = UInt64(message.count) * 8
        message.append(0x80)
        while message.count % 64 != 56 { message.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { message.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: message.count, by: 64) {
            for i in 0..<16 {
                let j = chunk + i * 4
                w[i] = UInt32(message[j]) << 24 | UInt32(message[j + 1]) << 16 | UInt32(message[j + 2]) << 8 | UInt32(message[j + 3])
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
        let d = Self.digest(bytes)
        return UInt32(d[0]) << 24 | UInt32(d[1]) << 16 | UInt32(d[2]) << 8 | UInt32(d[3])
    }

    static func hexDigits(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// What the trainer sends with a message so Redis does no hashing: the message's tokens joined by spaces, the
/// bucket hash of each state it passes through, and the hash of its content.
public struct LearnedMessage: Sendable, Hashable {
    /// Tokens joined by single spaces.
    public var tokens: String
    /// For each transition, in order, the first 8 hex digits of SHA-1 of its state.
    public var stateHashes: String
    /// The first 16 hex digits of SHA-1 of ``tokens``.
    public var contentHash: String

    /// Prepares a message's tokens for a chain of `stateSize`.
    public init(tokens: [String], stateSize: Int) {
        self.tokens = tokens.joined(separator: " ")
        var hashes = ""
        if !tokens.isEmpty {
            var window = [String](repeating: "", count: stateSize)
            hashes.reserveCapacity((tokens.count + 1) * 8)
            for index in 0...tokens.count {
                let digest = SHA1.digest(window.joined(separator: " ").utf8)
                hashes += SHA1.hexDigits(Array(digest[0..<4]))
                if index < tokens.count {
                    window.removeFirst()
                    window.append(tokens[index])
                }
            }
        }
        self.stateHashes = hashes
        self.contentHash = String(SHA1.hex(self.tokens.utf8).prefix(16))
    }
}
