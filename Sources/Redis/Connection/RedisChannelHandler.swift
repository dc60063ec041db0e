import NIOCore
import Synchronization

/// Shared between a connection and its handler: turns true, before any caller hears of a failure, once the
/// connection must not be used again.
final class ConnectionHealth: Sendable {
    private let failed = Atomic<Bool>(false)

    var isFailed: Bool { self.failed.load(ordering: .acquiring) }

    func markFailed() { self.failed.store(true, ordering: .releasing) }
}

/// Marks a command that never reached the socket, so it is safe to send again on another connection.
struct CommandNotSent: Error {}

/// A batch of commands written together (one command, or a pipeline) and the promise of their replies.
struct RedisBatch {
    /// The encodings of every command, back to back.
    var payload: ByteBuffer
    /// How many replies complete the batch.
    var count: Int
    /// When the connection gives up on the batch and is discarded.
    var deadline: NIODeadline
    /// Completed with one reply per command, in order; error replies stay as ``RedisReply/error(_:)``.
    var promise: EventLoopPromise<[RedisReply]>
}

/// Matches replies to the batches written on one connection, in order.
///
/// Writes from concurrent callers are coalesced: a flush is deferred to the end of the event loop's current
/// round, so commands written in the same round leave in one `writev`. When a batch's deadline passes, or the
/// server sends bytes that are not RESP, every batch in flight fails and the channel is closed: replies are
/// matched by position, so a connection that lost its place is never reused.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisBatch
    typealias OutboundOut = ByteBuffer

    private struct InFlight {
        var batch: RedisBatch
        var replies: [RedisReply]
        var timer: Scheduled<Void>?
    }

    private let reader: HiredisReplyReader
    private let peer: String
    private var inFlight = CircularBuffer<InFlight>(initialCapacity: 16)
    private var flushScheduled = false
    /// Set once the connection can no longer be used; later writes fail with it at once.
    private var failure: RedisError?

    private let health: ConnectionHealth

    init(reader: HiredisReplyReader, peer: String, health: ConnectionHealth) {
        self.reader = reader
        self.peer = peer
        self.health = health
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let batch = self.unwrapOutboundIn(data)
        if let failure = self.failure {
            let notSent = RedisError(
                .connectionClosed,
                "the connection to \(self.peer) had failed; the command was not sent",
                underlying: CommandNotSent()
            )
            batch.promise.fail(notSent)
            promise?.fail(failure)
            return
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timer = context.eventLoop.scheduleTask(deadline: batch.deadline) {
            let (handler, context) = loopBound.value
            handler.deadlinePassed(context: context)
        }
        self.inFlight.append(InFlight(batch: batch, replies: [], timer: timer))
        self.inFlight[self.inFlight.index(before: self.inFlight.endIndex)].replies.reserveCapacity(batch.count)
        context.write(self.wrapOutboundOut(batch.payload), promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        do throws(RedisError) {
            try buffer.withUnsafeReadableBytes { bytes throws(RedisError) in try self.reader.feed(bytes) }
            while let reply = try self.reader.next() {
                guard !self.inFlight.isEmpty else {
                    throw RedisError(.protocolError, "\(self.peer) sent a reply nobody asked for")
                }
                self.inFlight[self.inFlight.startIndex].replies.append(reply)
                let head = self.inFlight[self.inFlight.startIndex]
                if head.replies.count == head.batch.count {
                    self.inFlight.removeFirst()
                    head.timer?.cancel()
                    head.batch.promise.succeed(head.replies)
                }
            }
        } catch {
            self.failAll(error, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(
            RedisError(
                .connectionClosed,
                "the connection to \(self.peer) closed with \(self.inFlight.count) batch(es) of commands in flight"
            ),
            context: nil
        )
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(
            RedisError(.connectionClosed, "the connection to \(self.peer) failed", underlying: error),
            context: context
        )
    }

    private func deadlinePassed(context: ChannelHandlerContext) {
        // A batch's timer is cancelled when its replies arrive, so a timer that fires means a batch is late.
        self.failAll(
            RedisError(
                .timeout,
                "\(self.peer) did not answer within the command deadline; the connection was discarded"
            ),
            context: context
        )
    }

    /// Fails every batch in flight and closes the channel (when a context is given).
    private func failAll(_ error: RedisError, context: ChannelHandlerContext?) {
        self.health.markFailed()
        if self.failure == nil { self.failure = error }
        let failed = self.inFlight
        self.inFlight.removeAll()
        for entry in failed {
            entry.timer?.cancel()
            entry.batch.promise.fail(error)
        }
        if let context { context.close(promise: nil) }
    }
}
