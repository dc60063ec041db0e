import Logging
import NIOCore
import Synchronization

/// The connections to one node: a few multiplexed connections shared round-robin by every caller, and
/// dedicated connections leased one at a time for blocking commands.
///
/// A dead connection is replaced on next use. Connecting retries with capped, jittered backoff until the
/// command's deadline; concurrent callers share one attempt instead of stampeding the node.
final class RedisNodePool: Sendable {
    let endpoint: RedisEndpoint
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>

    private enum Slot {
        case empty
        case connecting(Task<RedisConnection, any Error>)
        case ready(RedisConnection)
    }

    private struct State {
        var slots: [Slot]
        var next = 0
        var idleDedicated: [RedisConnection] = []
        var isShutDown = false
    }

    /// Dedicated connections kept for reuse after a blocking command returned normally.
    private static let maxIdleDedicated = 8

    init(endpoint: RedisEndpoint, configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.endpoint = endpoint
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(State(slots: Array(repeating: .empty, count: max(1, configuration.connectionsPerNode))))
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
            connection.close()
            throw error
        }
        self.keepOrClose(connection)
        return replies[0]
    }

    /// Keeps a dedicated connection for reuse if it is still sound and there is room, else closes it.
    private func keepOrClose(_ connection: RedisConnection) {
        let kept = self.state.withLock { state in
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
            connection.close()
            throw error
        }
        self.keepOrClose(connection)
        return result
    }

    /// Closes every connection; later calls fail.
    func shutdown() {
        let (slots, idle) = self.state.withLock { state in
            state.isShutDown = true
            defer {
                state.slots = state.slots.map { _ in .empty }
                state.idleDedicated = []
            }
            return (state.slots, state.idleDedicated)
        }
        for slot in slots {
            switch slot {
            case .ready(let connection): connection.close()
            case .connecting(let task): task.cancel()
            case .empty: break
            }
        }
        for connection in idle { connection.close() }
    }

    private func sharedConnection() async throws(RedisError) -> RedisConnection {
        enum Pick {
            case ready(RedisConnection)
            case wait(Task<RedisConnection, any Error>)
            case shutDown
        }
        let pick: Pick = self.state.withLock { state in
            guard !state.isShutDown else { return .shutDown }
            let index = state.next
            state.next = (state.next + 1) % state.slots.count
            switch state.slots[index] {
            case .ready(let connection) where connection.isUsable:
                return .ready(connection)
            case .connecting(let task):
                return .wait(task)
            case .ready, .empty:
                let task = Task { [self] in
                    do {
                        let connection = try await self.connectRetrying()
                        let keep = self.state.withLock { state in
                            guard !state.isShutDown else { return false }
                            state.slots[index] = .ready(connection)
                            return true
                        }
                        if !keep { connection.close() }
                        return connection
                    } catch {
                        self.state.withLock { state in state.slots[index] = .empty }
                        throw error
                    }
                }
                state.slots[index] = .connecting(task)
                return .wait(task)
            }
        }
        switch pick {
        case .ready(let connection):
            return connection
        case .shutDown:
            throw RedisError(.connectionClosed, "the Redis client for \(self.endpoint) was shut down")
        case .wait(let task):
            do {
                return try await task.value
            } catch let error as RedisError {
                throw error
            } catch {
                throw RedisError(.connectionFailed, "could not connect to Redis at \(self.endpoint)", underlying: error)
            }
        }
    }

    private func dedicatedConnection() async throws(RedisError) -> RedisConnection {
        let reused: RedisConnection? = self.state.withLock { state in
            while let connection = state.idleDedicated.popLast() {
                if connection.isUsable { return connection }
            }
            return nil
        }
        if let reused { return reused }
        return try await self.connectRetrying()
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
                try? await Task.sleep(for: delay)
            }
        }
    }
}
