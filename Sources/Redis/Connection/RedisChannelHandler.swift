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

/// A batch of commands written together (one command, or a pipeline) and the continuation waiting for its
/// replies. Completed exactly once: by its last reply, or by the failure that removes it from the handler.
struct RedisBatch {
    /// The encodings of every command, back to back.
    var payload: ByteBuffer
    /// How many replies complete the batch.
    var count: Int
    /// When the connection gives up on the batch and is discarded.
    var deadline: NIODeadline
    /// Completed with one reply per command, in order; error replies stay as ``RedisReply/error(_:)``.
    var continuation: UnsafeContinuation<[RedisReply], any Error>

    func succeed(_ replies: [RedisReply]) { self.continuation.resume(returning: replies) }
    func fail(_ error: RedisError) { self.continuation.resume(throwing: error) }
}

/// Matches replies to the batches written on one connection, in order.
///
/// Writes from concurrent callers are coalesced: a flush is deferred to the end of the event loop's current
/// round, so commands written in the same round leave in one `writev`. When a batch's deadline passes, or the
/// server sends bytes that are not RESP, every batch in flight fails and the channel is closed: replies are
/// matched by position, so a connection that lost its place is never reused.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let reader: HiredisReplyReader
    private let peer: String
    private var inFlight = CircularBuffer<RedisBatch>(initialCapacity: 16)
    /// Replies gathered so far for the oldest batch in flight.
    private var oldestReplies: [RedisReply] = []
    private var flushScheduled = false
    private var context: ChannelHandlerContext?
    /// One timer per connection, armed for the oldest batch's deadline while batches are in flight. Batches
    /// complete in order, so the oldest one is the first to be late.
    private var deadlineTimer: Scheduled<Void>?
    /// Set once the connection can no longer be used; later writes fail with it at once.
    private var failure: RedisError?

    private let health: ConnectionHealth

    init(reader: HiredisReplyReader, peer: String, health: ConnectionHealth) {
        self.reader = reader
        self.peer = peer
        self.health = health
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.failAll(RedisError(.connectionClosed, "the connection to \(self.peer) closed"), context: nil)
        self.context = nil
    }

    /// Writes a batch. Called on the channel's event loop, straight from ``RedisConnection`` rather than
    /// through the pipeline's outbound path: that spares a boxed `NIOAny` and a write promise per batch, and a
    /// batch submitted after the channel closed still fails at once instead of being dropped.
    func submit(_ batch: RedisBatch) {
        guard self.failure == nil, let context = self.context else {
            batch.fail(
                RedisError(
                    .connectionClosed,
                    "the connection to \(self.peer) had failed; the command was not sent",
                    underlying: CommandNotSent()
                )
            )
            return
        }
        if self.inFlight.isEmpty { self.oldestReplies.reserveCapacity(batch.count) }
        self.inFlight.append(batch)
        if self.deadlineTimer == nil { self.armDeadlineTimer(context: context) }
        context.write(self.wrapOutboundOut(batch.payload), promise: nil)
        // A lone batch is flushed at once (its caller waits for nothing else). With others in flight the flush
        // waits for the end of the event loop's round, so concurrent callers share one write.
        if self.inFlight.count == 1 {
            context.flush()
        } else if !self.flushScheduled {
            self.flushScheduled = true
            context.eventLoop.assumeIsolated().execute {
                self.flushScheduled = false
                self.context?.flush()
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        do throws(RedisError) {
            try buffer.withUnsafeReadableBytes { bytes throws(RedisError) in try self.reader.feed(bytes) }
            while let reply = try self.reader.next() {
                guard let oldest = self.inFlight.first else {
                    throw RedisError(.protocolError, "\(self.peer) sent a reply nobody asked for")
                }
                self.oldestReplies.append(reply)
                if self.oldestReplies.count == oldest.count {
                    self.inFlight.removeFirst()
                    let replies = self.oldestReplies
                    self.oldestReplies = []
                    if let next = self.inFlight.first { self.oldestReplies.reserveCapacity(next.count) }
                    oldest.succeed(replies)
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

    private func armDeadlineTimer(context: ChannelHandlerContext) {
        guard let oldest = self.inFlight.first else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.deadlineTimer = context.eventLoop.scheduleTask(deadline: oldest.deadline) {
            let (handler, context) = loopBound.value
            handler.deadlineTimer = nil
            handler.deadlineTimerFired(context: context)
        }
    }

    private func deadlineTimerFired(context: ChannelHandlerContext) {
        guard let oldest = self.inFlight.first else { return }
        guard oldest.deadline <= .now() else {
            // The batch the timer was armed for has been answered; watch the one that is oldest now.
            self.armDeadlineTimer(context: context)
            return
        }
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
        self.deadlineTimer?.cancel()
        self.deadlineTimer = nil
        self.oldestReplies = []
        for batch in failed {
            batch.fail(error)
        }
        if let context { context.close(promise: nil) }
    }
}
