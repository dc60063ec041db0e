import CHiredis

/// The only door to hiredis: its RESP2 reply parser (`redisReader`), fed the bytes SwiftNIO reads from a
/// socket. Connections, I/O and timeouts belong to SwiftNIO; hiredis only turns bytes into replies.
///
/// Not thread-safe: one reader belongs to one channel handler, on one event loop.
final class HiredisReplyReader {
    private let reader: UnsafeMutablePointer<redisReader>

    /// Makes a reader; fails only when hiredis cannot allocate one.
    static func make() throws(RedisError) -> HiredisReplyReader {
        guard let reader = redisReaderCreate() else {
            throw RedisError(.protocolError, "hiredis could not allocate a reply reader")
        }
        return HiredisReplyReader(reader)
    }

    private init(_ reader: UnsafeMutablePointer<redisReader>) {
        self.reader = reader
    }

    deinit {
        redisReaderFree(self.reader)
    }

    /// Hands bytes read from the socket to the parser.
    func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if redisReaderFeed(self.reader, base.assumingMemoryBound(to: CChar.self), bytes.count) != REDIS_OK {
            throw self.readerError()
        }
    }

    /// The next complete reply, or `nil` when more bytes are needed. An error reply comes back as
    /// ``RedisReply/error(_:)``; bytes that are not RESP throw.
    func next() throws(RedisError) -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(self.reader, &raw) == REDIS_OK else {
            throw self.readerError()
        }
        guard let raw else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return Self.convert(reply)
    }

    private func readerError() -> RedisError {
        let text = withUnsafeBytes(of: self.reader.pointee.errstr) { buffer in
            String(decoding: buffer.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return RedisError(.protocolError, "the server sent bytes that are not RESP2: \(text)")
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            return .bulkString(Self.bytes(value.str, value.len))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: Self.bytes(value.str, value.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: Self.bytes(value.str, value.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(value.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(value.elements)
            for index in 0..<value.elements {
                if let element = value.element[index] {
                    elements.append(Self.convert(element))
                } else {
                    elements.append(.null)
                }
            }
            return .array(elements)
        default:
            return .null
        }
    }

    private static func bytes(_ pointer: UnsafeMutablePointer<CChar>?, _ count: Int) -> [UInt8] {
        guard let pointer, count > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}
