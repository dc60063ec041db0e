import CoreMetrics
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The Redis client every role shares: one server or a Redis Cluster, behind the same calls.
///
/// - Commands from concurrent tasks are pipelined on a few multiplexed connections per node.
/// - ``pipeline(_:)`` writes a batch at once and returns one result per command, in order; in a cluster the
///   batch is split by node, sent to all nodes concurrently and reassembled.
/// - ``blocking(_:block:)`` runs `XREADGROUP … BLOCK` and friends on dedicated connections.
/// - In a cluster, commands go to the master of their first key's slot; `MOVED` updates the slot map (and
///   schedules a refresh), `ASK` is followed once with `ASKING`, and `TRYAGAIN`/`CLUSTERDOWN`/`LOADING` are
///   retried with backoff, all within ``RedisConfiguration/maxRedirects``.
///
/// Nothing runs in the background until the first command. ``shutdown()`` closes every connection.
public final class RedisClient: Sendable {
    /// How this client reaches Redis.
    public let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let pools: Mutex<[RedisEndpoint: RedisNodePool]>
    /// The pool of the one server, when not in cluster mode: spares a dictionary lookup per command.
    private let standalonePool: RedisNodePool?
    private let cluster: Mutex<ClusterState>

    private struct ClusterState {
        var topology: ClusterTopology?
        var refresh: Task<ClusterTopology, any Error>?
        var isShutDown = false
    }

    /// Makes a client; no connection is opened until the first command.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        if configuration.isCluster {
            self.standalonePool = nil
            self.pools = Mutex([:])
        } else {
            let endpoint = configuration.endpoints[0]
            let pool = RedisNodePool(
                endpoint: endpoint, configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger
            )
            self.standalonePool = pool
            self.pools = Mutex([endpoint: pool])
        }
        self.cluster = Mutex(ClusterState())
    }

    /// Closes every connection. Commands in flight fail with ``RedisError/Code/connectionClosed``.
    public func shutdown() {
        let pools = self.pools.withLock { pools in
            defer { pools = [:] }
            return Array(pools.values)
        }
        let refresh = self.cluster.withLock { state in
            state.isShutDown = true
            return state.refresh
        }
        refresh?.cancel()
        for pool in pools { pool.shutdown() }
    }

    // MARK: Commands

    /// Sends one command and returns its reply; an error reply throws ``RedisError`` with code `.server`.
    @discardableResult
    public func send(_ command: RedisCommand) async throws(RedisError) -> RedisReply {
        do {
            return try Self.unwrap(try await self.route(command, block: nil), command: command)
        } catch {
            RedisMetrics.failed(error)
            throw error
        }
    }

    /// Sends one command and returns its reply.
    @discardableResult
    public func send(_ name: String, _ arguments: RedisArgument...) async throws(RedisError) -> RedisReply {
        try await self.send(RedisCommand(name, arguments))
    }

    /// Sends one command to a given node (for commands that must reach every master, such as `FUNCTION LOAD`).
    @discardableResult
    public func send(_ command: RedisCommand, to endpoint: RedisEndpoint) async throws(RedisError) -> RedisReply {
        let replies = try await self.pool(for: endpoint).send([command])
        return try Self.unwrap(replies[0], command: command)
    }

    /// Runs a blocking command (`XREADGROUP … BLOCK ms`, `BLPOP`, …) on a dedicated connection whose deadline is
    /// `block` plus ``RedisConfiguration/blockingMargin``. Cancelling the caller closes that connection and
    /// throws ``RedisError/Code/cancelled``.
    public func blocking(_ command: RedisCommand, block: Duration) async throws(RedisError) -> RedisReply {
        do {
            return try Self.unwrap(try await self.route(command, block: block), command: command)
        } catch {
            RedisMetrics.failed(error)
            throw error
        }
    }

    /// Sends commands as one pipeline and returns one result per command, in order. A command's error reply is
    /// its `.failure`; the other commands still run. Connection failures fail the commands sent on it.
    ///
    /// `timeout` replaces ``RedisConfiguration/commandTimeout`` for this pipeline, for work known to be long
    /// (large Function calls) that must not be cut off while Redis is busy with other clients' work.
    public func pipeline(_ commands: [RedisCommand], timeout: Duration? = nil) async -> [Result<RedisReply, RedisError>] {
        let results = await self.sendPipeline(commands, timeout: timeout)
        for case .failure(let error) in results { RedisMetrics.failed(error) }
        return results
    }

    private func sendPipeline(_ commands: [RedisCommand], timeout: Duration?) async -> [Result<RedisReply, RedisError>] {
        guard !commands.isEmpty else { return [] }
        if let pool = self.standalonePool {
            do {
                let replies = try await pool.send(commands, timeout: timeout)
                return zip(commands, replies).map { command, reply in
                    Result { () throws(RedisError) in try Self.unwrap(reply, command: command) }
                }
            } catch {
                return Array(repeating: .failure(error), count: commands.count)
            }
        }
        return await self.clusterPipeline(commands, timeout: timeout)
    }

    /// Runs `commands` as one `MULTI`/`EXEC` transaction on a connection of its own: first `WATCH`es `watch` and
    /// sends `read`, whose replies `decide` sees and may refuse by throwing (nothing is then run); a watched key
    /// changing before `EXEC` aborts the transaction with ``RedisError/Code/transactionAborted``. Returns the
    /// replies of `commands` (each may be an error reply). In a cluster every key must be in the slot of
    /// `watch[0]`; a redirect refreshes the slot map and fails the transaction (the caller may run it again).
    public func transaction(
        watch: [RedisArgument], read: [RedisCommand], decide: ([RedisReply]) throws(RedisError) -> Void,
        commands: [RedisCommand], timeout: Duration? = nil
    ) async throws(RedisError) -> [RedisReply] {
        precondition(!watch.isEmpty, "a transaction watches at least one key")
        let slot = watch[0].withBytes { HashSlot.slot(forKey: $0) }
        let pool: RedisNodePool
        if let standalone = self.standalonePool {
            pool = standalone
        } else {
            pool = self.pool(for: try await self.endpoint(for: slot))
        }
        let timeout = timeout ?? self.configuration.commandTimeout
        do throws(RedisError) {
            return try await pool.withDedicatedConnection { connection throws(RedisError) in
                let first = try await connection.send([RedisCommand("WATCH", watch)] + read, timeout: timeout)
                for reply in first {
                    if case .error(let message) = reply {
                        if ClusterRedirect(errorReply: message) != .none { self.scheduleTopologyRefresh() }
                        _ = try? await connection.send([RedisCommand("UNWATCH")], timeout: timeout)
                        throw RedisError(.server, message)
                    }
                }
                do throws(RedisError) {
                    try decide(Array(first.dropFirst()))
                } catch {
                    _ = try await connection.send([RedisCommand("UNWATCH")], timeout: timeout)
                    throw error
                }
                let replies = try await connection.send([RedisCommand("MULTI")] + commands + [RedisCommand("EXEC")], timeout: timeout)
                guard let exec = replies.last else { throw RedisError(.protocolError, "EXEC got no reply") }
                switch exec {
                case .array(let results):
                    return results
                case .null:
                    throw RedisError(.transactionAborted, "a watched key changed before EXEC")
                case .error(let message):
                    // EXECABORT: a command was refused when queued; its own error says why.
                    let cause = replies.dropFirst().dropLast().first { if case .error = $0 { true } else { false } }
                    if case .error(let queued)? = cause { throw RedisError(.server, queued) }
                    throw RedisError(.server, message)
                default:
                    throw RedisError(.protocolError, "EXEC answered \(exec)")
                }
            }
        } catch {
            RedisMetrics.failed(error)
            throw error
        }
    }

    /// The masters: the one server, or every master of the cluster's current slot map.
    public func masters() async throws(RedisError) -> [RedisEndpoint] {
        guard self.configuration.isCluster else { return [self.configuration.endpoints[0]] }
        return try await self.currentTopology().masters
    }

    /// Learns the cluster's slot map again (no-op for a standalone server).
    public func refreshTopology() async throws(RedisError) {
        guard self.configuration.isCluster else { return }
        _ = try await self.refreshedTopology()
    }

    // MARK: Routing

    private static func unwrap(_ reply: RedisReply, command: RedisCommand) throws(RedisError) -> RedisReply {
        if case .error(let message) = reply {
            throw RedisError(.server, message)
        }
        return reply
    }

    func pool(for endpoint: RedisEndpoint) -> RedisNodePool {
        self.pools.withLock { pools in
            if let pool = pools[endpoint] { return pool }
            let pool = RedisNodePool(
                endpoint: endpoint,
                configuration: self.configuration,
                eventLoopGroup: self.eventLoopGroup,
                logger: self.logger
            )
            pools[endpoint] = pool
            return pool
        }
    }

    /// Sends one command to the node that owns it and follows cluster redirects. Returns the final reply,
    /// which may be an error reply the caller must see.
    private func route(_ command: RedisCommand, block: Duration?) async throws(RedisError) -> RedisReply {
        if let pool = self.standalonePool {
            if let block { return try await pool.sendBlocking(command, block: block) }
            return try await pool.send([command])[0]
        }
        var endpoint = try await self.endpoint(for: command.slot)
        var asking = false
        var attempt = 0
        while true {
            let reply: RedisReply
            do {
                let pool = self.pool(for: endpoint)
                if asking {
                    reply = try await pool.send([RedisCommand("ASKING"), command])[1]
                } else if let block {
                    reply = try await pool.sendBlocking(command, block: block)
                } else {
                    reply = try await pool.send([command])[0]
                }
            } catch where error.code == .connectionFailed && attempt < self.configuration.maxRedirects {
                // Nothing was sent: the node may have failed over. Learn the map again and resend.
                attempt += 1
                try? await Task.sleep(for: self.configuration.clusterRetryBackoff.delay(attempt: attempt))
                _ = try? await self.refreshedTopology()
                endpoint = try await self.endpoint(for: command.slot)
                asking = false
                continue
            }
            guard case .error(let message) = reply else { return reply }
            let redirect = ClusterRedirect(errorReply: message, from: endpoint)
            if redirect == .none { return reply }
            attempt += 1
            guard attempt <= self.configuration.maxRedirects else {
                throw RedisError(
                    .redirectLimit,
                    "\(command.name) was redirected or retried \(attempt - 1) times; last answer: \(message)"
                )
            }
            switch redirect {
            case .moved(let slot, let target):
                self.cluster.withLock { state in state.topology?.assign(Int(slot)...Int(slot), to: target) }
                self.scheduleTopologyRefresh()
                endpoint = target
                asking = false
            case .ask(_, let target):
                endpoint = target
                asking = true
            case .retryLater:
                try? await Task.sleep(for: self.configuration.clusterRetryBackoff.delay(attempt: attempt))
                endpoint = try await self.endpoint(for: command.slot)
                asking = false
            case .none:
                return reply
            }
        }
    }

    private func clusterPipeline(_ commands: [RedisCommand], timeout: Duration?) async -> [Result<RedisReply, RedisError>] {
        var groups: [RedisEndpoint: [Int]] = [:]
        var results = [Result<RedisReply, RedisError>?](repeating: nil, count: commands.count)
        for (index, command) in commands.enumerated() {
            do {
                groups[try await self.endpoint(for: command.slot), default: []].append(index)
            } catch {
                results[index] = .failure(error)
            }
        }
        let sent = await withTaskGroup(of: [(Int, Result<RedisReply, RedisError>)].self) { group in
            for (endpoint, indices) in groups {
                group.addTask {
                    do throws(RedisError) {
                        let replies = try await self.pool(for: endpoint).send(indices.map { commands[$0] }, timeout: timeout)
                        return Array(zip(indices, replies.map { Result<RedisReply, RedisError>.success($0) }))
                    } catch {
                        return indices.map { ($0, .failure(error)) }
                    }
                }
            }
            var all: [(Int, Result<RedisReply, RedisError>)] = []
            for await part in group { all += part }
            return all
        }
        for (index, result) in sent { results[index] = result }
        // Commands answered with a redirect (or whose node was unreachable) go again, one by one, through the
        // redirect-following path; all others are final.
        for index in results.indices where Self.needsRouting(results[index]) {
            do {
                results[index] = .success(try await self.route(commands[index], block: nil))
            } catch {
                results[index] = .failure(error)
            }
        }
        return zip(commands, results).map { command, result in
            switch result {
            case .success(let reply)?: Result { () throws(RedisError) in try Self.unwrap(reply, command: command) }
            case .failure(let error)?: .failure(error)
            case nil: .failure(RedisError(.protocolError, "\(command.name) got no reply"))
            }
        }
    }

    private static func needsRouting(_ result: Result<RedisReply, RedisError>?) -> Bool {
        switch result {
        case .success(.error(let message))?: ClusterRedirect(errorReply: message) != .none
        case .failure(let error)?: error.code == .connectionFailed
        default: false
        }
    }

    // MARK: Cluster topology

    private func endpoint(for slot: UInt16?) async throws(RedisError) -> RedisEndpoint {
        let topology = try await self.currentTopology()
        if let slot {
            if let master = topology.master(forSlot: slot) { return master }
            throw RedisError(.clusterUnavailable, "no master serves slot \(slot)")
        }
        guard let first = topology.masters.first else {
            throw RedisError(.clusterUnavailable, "the cluster has no master")
        }
        return first
    }

    private func currentTopology() async throws(RedisError) -> ClusterTopology {
        if let topology = self.cluster.withLock({ $0.topology }) { return topology }
        return try await self.refreshedTopology()
    }

    private func scheduleTopologyRefresh() {
        Task { _ = try? await self.refreshedTopology() }
    }

    /// Asks the known masters, then the seeds, for the slot map; concurrent callers share one refresh.
    private func refreshedTopology() async throws(RedisError) -> ClusterTopology {
        let task: Task<ClusterTopology, any Error> = self.cluster.withLock { state in
            if let refresh = state.refresh { return refresh }
            let candidates = (state.topology?.masters ?? []) + self.configuration.endpoints
            let refresh = Task { [self] () async throws -> ClusterTopology in
                defer { self.cluster.withLock { $0.refresh = nil } }
                let topology = try await self.fetchTopology(from: candidates)
                self.cluster.withLock { $0.topology = topology }
                self.logger.debug(
                    "redis cluster slot map refreshed",
                    metadata: ["redis.masters": "\(topology.masters.map(\.description))"]
                )
                return topology
            }
            state.refresh = refresh
            return refresh
        }
        do {
            return try await task.value
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.clusterUnavailable, "could not learn the cluster's slot map", underlying: error)
        }
    }

    private func fetchTopology(from candidates: [RedisEndpoint]) async throws(RedisError) -> ClusterTopology {
        var seen = Set<RedisEndpoint>()
        var lastError: RedisError?
        for endpoint in candidates where seen.insert(endpoint).inserted {
            do throws(RedisError) {
                let pool = self.pool(for: endpoint)
                let topology: ClusterTopology
                let shards = try await pool.send([RedisCommand("CLUSTER", "SHARDS")])[0]
                if case .error = shards {
                    let slots = try await pool.send([RedisCommand("CLUSTER", "SLOTS")])[0]
                    if case .error(let message) = slots { throw RedisError(.server, message) }
                    topology = try ClusterTopology(slotsReply: slots, asked: endpoint)
                } else {
                    topology = try ClusterTopology(shardsReply: shards, asked: endpoint)
                }
                guard !topology.masters.isEmpty else {
                    throw RedisError(.clusterUnavailable, "\(endpoint) reports no master with slots")
                }
                return topology
            } catch {
                lastError = error
            }
        }
        throw RedisError(
            .clusterUnavailable,
            "no cluster node answered CLUSTER SHARDS or CLUSTER SLOTS (tried \(seen.count))",
            underlying: lastError
        )
    }
}

/// The client's metrics (swift-metrics; Prometheus when the process bootstraps it): failed commands by kind
/// (`connection failed`, `timeout`, `server error`, …). Cancelled waits are not failures.
enum RedisMetrics {
    static func failed(_ error: RedisError) {
        guard error.code != .cancelled else { return }
        Counter(label: "markov_redis_errors_total", dimensions: [("code", error.code.description)]).increment()
    }
}
