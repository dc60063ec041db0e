@testable import Redis
import NIOCore
import Testing

@Suite("Commands")
struct RedisCommandTests {
    @Test("arguments are encoded as RESP bulk strings, bytes untouched")
    func encoding() {
        let command = RedisCommand("SET", "k{x}", .bytes([0x00, 0xFF, 0x0D, 0x0A]), 42)
        let expected: [UInt8] = Array("*4\r\n$3\r\nSET\r\n$4\r\nk{x}\r\n$4\r\n".utf8) + [0x00, 0xFF, 0x0D, 0x0A]
            + Array("\r\n$2\r\n42\r\n".utf8)
        #expect(Array(command.encoded.readableBytesView) == expected)
        #expect(command.slot == HashSlot.slot(forKey: "x"))
    }

    @Test("the routing key is found from the command's shape")
    func routing() {
        #expect(RedisCommand("PING").slot == nil)
        #expect(RedisCommand("CLUSTER", "SHARDS").slot == nil)
        #expect(RedisCommand("HINCRBY", "{g:1}:s", "f", 1).slot == HashSlot.slot(forKey: "g:1"))
        #expect(RedisCommand("FCALL", "f", 1, "{g:2}:k", "arg").slot == HashSlot.slot(forKey: "g:2"))
        #expect(RedisCommand("FCALL_RO", "f", 0, "notakey").slot == nil)
        #expect(
            RedisCommand("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 100, "STREAMS", "{p:3}", ">").slot
                == HashSlot.slot(forKey: "p:3")
        )
        #expect(RedisCommand("XGROUP", "CREATE", "{p:4}", "g", "$").slot == HashSlot.slot(forKey: "p:4"))
        #expect(RedisCommand("GET", ["x"], routingKey: "{g:9}").slot == HashSlot.slot(forKey: "g:9"))
    }
}
