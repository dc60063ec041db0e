@testable import Redis
import Testing

@Suite("Reply decoding (hiredis reader)")
struct ReplyReaderTests {
    static let stream: [UInt8] = Array(
        ("+OK\r\n" + ":-42\r\n" + "$-1\r\n" + "*-1\r\n" + "$0\r\n\r\n" + "-NOSCRIPT No matching script\r\n"
            + "*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n-ERR inner\r\n$-1\r\n").utf8
    ) + Array("$3\r\n".utf8) + [0x00, 0xFF, 0x7B] + Array("\r\n".utf8)

    static let expected: [RedisReply] = [
        .simpleString("OK"), .integer(-42), .null, .null, .bulkString([]), .error("NOSCRIPT No matching script"),
        .array([.integer(1), .array([.bulkString([0x61]), .array([.error("ERR inner")])]), .null]),
        .bulkString([0x00, 0xFF, 0x7B]),
    ]

    @Test("every RESP2 type, nested arrays and nil, in one feed")
    func wholeFeed() throws {
        let reader = try HiredisReplyReader.make()
        try Self.stream.withUnsafeBytes { try reader.feed($0) }
        var replies: [RedisReply] = []
        while let reply = try reader.next() { replies.append(reply) }
        #expect(replies == Self.expected)
    }

    @Test("replies split at every byte boundary decode the same")
    func byteByByte() throws {
        let reader = try HiredisReplyReader.make()
        var replies: [RedisReply] = []
        for byte in Self.stream {
            try [byte].withUnsafeBytes { try reader.feed($0) }
            while let reply = try reader.next() { replies.append(reply) }
        }
        #expect(replies == Self.expected)
    }

    @Test("bytes that are not RESP are a protocol error")
    func garbage() throws {
        let reader = try HiredisReplyReader.make()
        try Array("?what\r\n".utf8).withUnsafeBytes { try reader.feed($0) }
        #expect {
            _ = try reader.next()
        } throws: { error in
            (error as? RedisError)?.code == .protocolError
        }
    }

    @Test("reply accessors")
    func accessors() {
        #expect(RedisReply.bulkString(Array("12".utf8)).int == 12)
        #expect(RedisReply.bulkString([0xFF]).string == "\u{FFFD}")
        #expect(RedisReply.simpleString("OK").bytes == Array("OK".utf8))
        #expect(RedisReply.null.isNull)
        #expect(RedisReply.array([.null]).array == [.null])
    }
}
