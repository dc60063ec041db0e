/// FNV-1a, 64 bits: a stable, dependency-free hash for ids derived from content (imported messages without an
/// id of their own). Not for security.
public struct StableHash: Sendable {
    private(set) public var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    /// Mixes bytes into the hash.
    public mutating func combine(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
            self.value = (self.value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
    }

    /// The hash as 16 lowercase hex digits.
    public var hex: String {
        let digits = String(self.value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
