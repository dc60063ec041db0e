import Logging
import NIOCore
import Synchronization

/// The connections to one node: a few multiplexed connections shared round-robin by every caller, and
/// dedicated connections leased one at a time for blocking commands.
///
/// A dead connection is replaced on next use, in the task of the command that needs it (nothing runs in the
/// background). Connecting retries with capped, jittered backoff until the command's deadline; concurrent callers
/// share one attempt per slot (``SingleFlight``) instead of stampeding the node. ``shutdown()`` closes every
/// connection, the dedicated ones in use included, and later calls fail with ``RedisError/Code/shutDown``.
final class RedisNodePool: Sendable {
    let endpoint: RedisEndpoint
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>
    /// One connect attempt at a time per shared slot.
    private let connects: [SingleFlight<RedisConnection>]

    private struct State {
        var slots: [RedisConnection?]
        var next = 0
        var idleDedicated: [RedisConnection] = []
        /// Dedicated connections leased to a caller now (closed by a shutdown).
        var leased: [ObjectIdentifier: RedisConnection] = [:]
        var isShutDown = false
    }

    /// Dedicated connections kept for reuse after a blocking command returned normally.
    private static let maxIdleDedicated = 8

    init(endpoint: RedisEndpoint, configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        let count = max(1, configuration.connectionsPerNode)
        self.state = Mutex(State(slots: Array(repeating: nil, count: count)))
        self.connects = (0..<count).map { _ in SingleFlight() }
    }

    private var shutDownError: RedisError {
        RedisError(.shutDown, "the Redis client was shut down; it takes no more commands (for \(self.endpoint))")
    }

    /// Sends a batch on one of the shared connections.
    /// A command that never left because its connection had just failed is sent once more on a fresh one.
    func send(_ commands: [RedisCommand], timeout: Duration? = nil) async throws(RedisError) -> [RedisReply] {
        let timeout = timeout ?? self.configuration.commandTimeout
        do {
            return try await self.sharedConnection().send(commands, timeout: timeout)
        } catch where error.underlying is CommandNotSent {
            return try await self.sharedConnection().send(commands, timeout: timeout)
        }
    }

    /// Runs a blocking command on a dedicated connection whose deadline is `block` plus the blocking margin.
    /// Cancelling the caller closes that connection; a connection that timed out or was cancelled is discarded.
    func sendBlocking(_ command: RedisCommand, block: Duration) async throws(RedisError) -> RedisReply {
        let connection = try await self.dedicatedConnection()
        let replies: [RedisReply]
        do {
            replies = try await connection.send(
                [command],
                timeout: block + self.configuration.blockingMargin,
                closeOnCancel: true
            )
        } catch {
            self.discard(connection)
            throw error
        }
        self.keepOrClose(connection)
        return replies[0]
    }

    /// Keeps a dedicated connection for reuse if it is still sound and there is room, else closes it.
    private func keepOrClose(_ connection: RedisConnection) {
        let kept = self.state.withLock { state in
            state.leased.removeValue(forKey: ObjectIdentifier(connection))
            guard !state.isShutDown, connection.isUsable, state.idleDedicated.count < Self.maxIdleDedicated else {
                return false
            }
            state.idleDedicated.append(connection)
            return true
        }
        if !kept { connection.close() }
    }

    /// Runs `body` on a connection of its own (for `WATCH`/`MULTI`/`EXEC`, whose state belongs to a connection),
    /// then keeps the connection for reuse if it is still sound and nothing is left watched on it.
    func withDedicatedConnection<Result>(
        _ body: (RedisConnection) async throws(RedisError) -> Result
    ) async throws(RedisError) -> Result {
        let connection = try await self.dedicatedConnection()
        let result: Result
        do {
            result = try await body(connection)
        } catch {
            self.discard(connection)
            throw error
        }
        self.keepOrClose(connection)
        return result
    }

    /// Closes a dedicated connection that failed or was cut short.
    private func discard(_ connection: RedisConnection) {
        _ = self.state.withLock { $0.leased.removeValue(forKey: ObjectIdentifier(connection)) }
        connection.close()
    }

    /// Closes every connection (commands in flight on them fail); later calls fail with a clear error. A connect
    /// under way closes its connection when it completes.
    func shutdown() {
        let connections = self.state.withLock { state -> [RedisConnection] in
            state.isShutDown = true
            defer {
                state.slots = state.slots.map { _ in nil }
                state.idleDedicated = []
                state.leased = [:]
            }
            return state.slots.compactMap { $0 } + state.idleDedicated + Array(state.leased.values)
        }
        for connection in connections { connection.close() }
    }

    /// Whether ``shutdown()`` was called.
    var isShutDown: Bool { self.state.withLock { $0.isShutDown } }

    private func sharedConnection() async throws(RedisError) -> RedisConnection {
        enum Pick {
            case ready(RedisConnection)
            case connect(Int)
            case shutDown
        }
        let pick: Pick = self.state.withLock { state in
            guard !state.isShutDown else { return .shutDown }
            let index = state.next
            state.next = (state.next + 1) % state.slots.count
            if let connection = state.slots[index], connection.isUsable { return .ready(connection) }
            return .connect(index)
        }
        switch pick {
        case .ready(let connection):
            return connection
        case .shutDown:
            throw self.shutDownError
        case .connect(let index):
            return try await self.connects[index].run { () throws(RedisError) -> RedisConnection in
                // Another caller's attempt may have filled the slot meanwhile.
                let current = self.state.withLock { state -> RedisConnection? in
                    guard let connection = state.slots[index], connection.isUsable else { return nil }
                    return connection
                }
                if let current { return current }
                let connection = try await self.connectRetrying()
                let kept = self.state.withLock { state -> Bool in
                    guard !state.isShutDown else { return false }
                    state.slots[index] = connection
                    return true
                }
                guard kept else {
                    connection.close()
                    throw self.shutDownError
                }
                return connection
            }
        }
    }

    /// A connection of the caller's own, reused from the idle ones when one is sound; leased until it is kept or
    /// closed, so that a shutdown closes it even mid-command.
    private func dedicatedConnection() async throws(RedisError) -> RedisConnection {
        enum Pick {
            case reused(RedisConnection)
            case connect
            case shutDown
        }
        let pick: Pick = self.state.withLock { state in
            guard !state.isShutDown else { return .shutDown }
            while let connection = state.idleDedicated.popLast() {
                if connection.isUsable {
                    state.leased[ObjectIdentifier(connection)] = connection
                    return .reused(connection)
                }
                connection.close()
            }
            return .connect
        }
        switch pick {
        case .reused(let connection):
            return connection
        case .shutDown:
            throw self.shutDownError
        case .connect:
            let connection = try await self.connectRetrying()
            let leased = self.state.withLock { state -> Bool in
                guard !state.isShutDown else { return false }
                state.leased[ObjectIdentifier(connection)] = connection
                return true
            }
            guard leased else {
                connection.close()
                throw self.shutDownError
            }
            return connection
        }
    }

    /// Connects, retrying with jittered backoff until the command deadline has passed.
    private func connectRetrying() async throws(RedisError) -> RedisConnection {
        let clock = ContinuousClock()
        let deadline = clock.now + self.configuration.commandTimeout
        var attempt = 0
        while true {
            do {
                return try await RedisConnection.connect(
                    to: self.endpoint,
                    configuration: self.configuration,
                    eventLoopGroup: self.eventLoopGroup,
                    logger: self.logger
                )
            } catch {
                let delay = self.configuration.reconnectBackoff.delay(attempt: attempt)
                attempt += 1
                guard clock.now + delay < deadline, !Task.isCancelled, !(error.underlying is HandshakeRejected) else {
                    self.logger.warning(
                        "redis connection failed",
                        metadata: ["redis.endpoint": "\(self.endpoint)", "redis.attempts": "\(attempt)",
                                   "error": "\(error)"]
                    )
                    throw error
                }
                self.logger.debug(
                    "redis connect retry",
                    metadata: ["redis.endpoint": "\(self.endpoint)", "redis.attempt": "\(attempt)"]
                )
                guard await Backoff.sleep(delay) else {
                    throw RedisError(.cancelled, "cancelled while connecting to Redis at \(self.endpoint)", underlying: error)
                }
            }
        }
    }
}
