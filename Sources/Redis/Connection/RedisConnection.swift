import Logging
import NIOCore
import NIOPosix

/// One connection to one Redis node, multiplexed: any number of tasks may send on it at once, and their
/// commands are pipelined and answered in order.
///
/// A connection that failed, closed or passed a deadline is never used again; ``isUsable`` turns false and the
/// pool makes a new one.
final class RedisConnection: Sendable {
    let endpoint: RedisEndpoint
    private let channel: any Channel
    private let handler: NIOLoopBound<RedisChannelHandler>
    private let health: ConnectionHealth

    private init(
        endpoint: RedisEndpoint,
        channel: any Channel,
        handler: NIOLoopBound<RedisChannelHandler>,
        health: ConnectionHealth
    ) {
        self.endpoint = endpoint
        self.channel = channel
        self.handler = handler
        self.health = health
    }

    /// Whether the connection may take more commands: open, and never failed or timed out.
    var isUsable: Bool { !self.health.isFailed && self.channel.isActive }

    /// Opens a connection, then sends `AUTH` and `SELECT` when the configuration asks for them.
    static func connect(
        to endpoint: RedisEndpoint,
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) async throws(RedisError) -> RedisConnection {
        let health = ConnectionHealth()
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(.nanoseconds(Int64(configuration.connectTimeout.nanoseconds)))
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let reader = try HiredisReplyReader.make()
                    let handler = RedisChannelHandler(reader: reader, peer: endpoint.description, health: health)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            switch endpoint {
            case .tcp(let host, let port):
                channel = try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: host, port: port).get()
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            }
        } catch {
            throw RedisError(.connectionFailed, "could not connect to Redis at \(endpoint)", underlying: error)
        }
        let handler: NIOLoopBound<RedisChannelHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw RedisError(.connectionFailed, "the connection to \(endpoint) closed while opening", underlying: error)
        }
        let connection = RedisConnection(endpoint: endpoint, channel: channel, handler: handler, health: health)
        var handshake: [RedisCommand] = []
        if let password = configuration.password {
            if let username = configuration.username {
                handshake.append(RedisCommand("AUTH", .string(username), .string(password)))
            } else {
                handshake.append(RedisCommand("AUTH", .string(password)))
            }
        }
        if configuration.database != 0 {
            handshake.append(RedisCommand("SELECT", .integer(configuration.database)))
        }
        if !handshake.isEmpty {
            do throws(RedisError) {
                let replies = try await connection.send(handshake, timeout: configuration.connectTimeout)
                for (command, reply) in zip(handshake, replies) {
                    if case .error(let message) = reply {
                        // The reply never echoes the password, so it is safe to show.
                        throw RedisError(
                            .connectionFailed,
                            "\(command.name) on \(endpoint) failed: \(message)",
                            underlying: HandshakeRejected()
                        )
                    }
                }
            } catch {
                connection.close()
                throw RedisError(.connectionFailed, error.message, underlying: error.underlying)
            }
        }
        logger.debug("redis connection opened", metadata: ["redis.endpoint": "\(endpoint)"])
        return connection
    }

    /// Sends commands in one write and returns one reply per command, in order. Error replies come back as
    /// ``RedisReply/error(_:)``; connection failures and deadlines throw.
    ///
    /// With `closeOnCancel`, cancelling the calling task closes the connection (for blocking commands, whose
    /// connection is dedicated); otherwise a cancelled caller still waits for its replies, which come back
    /// within the deadline.
    func send(
        _ commands: [RedisCommand],
        timeout: Duration,
        closeOnCancel: Bool = false
    ) async throws(RedisError) -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        var payload: ByteBuffer
        if commands.count == 1 {
            payload = commands[0].encoded
        } else {
            payload = self.channel.allocator.buffer(capacity: commands.reduce(0) { $0 + $1.encoded.readableBytes })
            for command in commands { payload.writeImmutableBuffer(command.encoded) }
        }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(timeout.nanoseconds))
        do {
            if closeOnCancel {
                let channel = self.channel
                return try await withTaskCancellationHandler { [payload] in
                    try await self.submit(payload, count: commands.count, deadline: deadline)
                } onCancel: {
                    channel.close(promise: nil)
                }
            }
            return try await self.submit(payload, count: commands.count, deadline: deadline)
        } catch let error as RedisError {
            if closeOnCancel && Task.isCancelled {
                throw RedisError(.cancelled, "\(commands[0].name) on \(self.endpoint) was cancelled", underlying: error)
            }
            throw error
        } catch {
            throw RedisError(.connectionClosed, "the connection to \(self.endpoint) failed", underlying: error)
        }
    }

    /// Hands a batch to the handler on its event loop; the handler resumes the continuation directly, so a
    /// command costs no promise, future or callback.
    private func submit(_ payload: ByteBuffer, count: Int, deadline: NIODeadline) async throws -> [RedisReply] {
        try await withUnsafeThrowingContinuation { continuation in
            let batch = RedisBatch(payload: payload, count: count, deadline: deadline, continuation: continuation)
            let eventLoop = self.channel.eventLoop
            if eventLoop.inEventLoop {
                self.handler.value.submit(batch)
            } else {
                eventLoop.execute { [handler] in handler.value.submit(batch) }
            }
        }
    }

    /// Closes the connection; commands in flight fail with ``RedisError/Code/connectionClosed``.
    func close() {
        self.channel.close(promise: nil)
    }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to zero.
    var nanoseconds: Int {
        let (seconds, attoseconds) = self.components
        return max(0, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }
}

/// The server refused `AUTH` or `SELECT`: retrying with the same settings cannot help.
struct HandshakeRejected: Error {}
