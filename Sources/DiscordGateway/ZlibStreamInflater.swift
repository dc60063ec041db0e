import CompressNIO
import NIOCore

/// Discord's `zlib-stream` transport compression: one inflate context for the whole connection; binary frames
/// are buffered until they end with the sync-flush marker `00 00 FF FF`, then inflated into one JSON payload.
struct ZlibStreamInflater {
    private let decompressor: ZlibDecompressor
    private var pending: ByteBuffer
    private var output: ByteBuffer
    /// Inflated payloads larger than this are refused (the connection is then resumed).
    let maxOutput: Int

    init(maxOutput: Int) throws {
        self.decompressor = try ZlibDecompressor(algorithm: .zlib)
        self.pending = ByteBuffer()
        self.output = ByteBuffer()
        self.maxOutput = maxOutput
    }

    /// Feeds one binary frame; returns the inflated payload when the frame completes one.
    mutating func feed(_ frame: ByteBuffer) throws -> ByteBuffer? {
        var frame = frame
        self.pending.writeBuffer(&frame)
        guard self.pending.readableBytes >= 4,
              self.pending.getBytes(at: self.pending.writerIndex - 4, length: 4) == [0x00, 0x00, 0xFF, 0xFF]
        else { return nil }
        self.output.clear()
        var oversized = false
        while true {
            // Room for a generous ratio, doubling when inflate runs out of it.
            self.output.reserveCapacity(
                minimumWritableBytes: max(65_536, self.output.readableBytes, self.pending.readableBytes * 8)
            )
            do {
                try self.decompressor.inflate(from: &self.pending, to: &self.output)
                break
            } catch let error as CompressNIOError where error == .bufferOverflow {
                // The output filled up; zlib may hold more even when every input byte is used: call again.
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                break  // every input byte used, nothing more to come out
            }
            if self.output.readableBytes > self.maxOutput {
                // Too large to hand on: keep inflating (the stream must stay in step) but throw the bytes away.
                oversized = true
                self.output.clear()
            }
        }
        if oversized || self.output.readableBytes > self.maxOutput {
            self.pending.clear()
            self.output.clear()
            throw Oversized(limit: self.maxOutput)
        }
        self.pending.clear()
        return self.output
    }

    /// A payload over ``maxOutput``: skipped, the stream stays usable.
    struct Oversized: Error, CustomStringConvertible {
        var limit: Int
        var description: String { "inflated payload over \(self.limit) bytes" }
    }
}
