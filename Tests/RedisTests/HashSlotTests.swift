import Redis
import Testing

@Suite("Hash slots")
struct HashSlotTests {
    @Test("CRC16 of the reference key", arguments: [("123456789", 12739), ("foo", 12182), ("bar", 5061), ("", 0)])
    func referenceValues(key: String, slot: Int) {
        #expect(HashSlot.slot(forKey: key) == UInt16(slot))
    }

    @Test("hash tags select the hashed part")
    func hashTags() {
        #expect(HashSlot.slot(forKey: "{user1000}.following") == HashSlot.slot(forKey: "{user1000}.followers"))
        #expect(HashSlot.slot(forKey: "{user1000}.following") == HashSlot.slot(forKey: "user1000"))
        // Only the first {…} counts.
        #expect(HashSlot.slot(forKey: "foo{bar}{zap}") == HashSlot.slot(forKey: "bar"))
        // An empty tag hashes the whole key.
        #expect(HashSlot.slot(forKey: "foo{}{bar}") != HashSlot.slot(forKey: "bar"))
        #expect(HashSlot.slot(forKey: "{}") == HashSlot.slot(forKey: "{}"))
        #expect(HashSlot.slot(forKey: "foo{}{bar}") == Self.crcSlot("foo{}{bar}"))
        // The tag ends at the first } after the first {.
        #expect(HashSlot.slot(forKey: "foo{{bar}}zap") == HashSlot.slot(forKey: "{bar"))
        // No closing brace: the whole key.
        #expect(HashSlot.slot(forKey: "foo{bar") == Self.crcSlot("foo{bar"))
    }

    @Test("bytes that are not UTF-8 hash as bytes")
    func binaryKeys() {
        let key: [UInt8] = [0x7B, 0x67, 0x3A, 0x31, 0x7D, 0x00, 0xFF, 0x0A]  // "{g:1}\0\xff\n"
        let slot = key.withUnsafeBytes { HashSlot.slot(forKey: $0) }
        #expect(slot == HashSlot.slot(forKey: "g:1"))
    }

    /// Straight CRC16-XModem, bit by bit, as an independent check of the table-driven code.
    static func crcSlot(_ key: String) -> UInt16 {
        var crc: UInt16 = 0
        for byte in key.utf8 {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc % 16384
    }
}
