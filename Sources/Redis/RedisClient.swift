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
/// Background work belongs to ``run()``: it refreshes the cluster's slot map when a redirect asks for it, and
/// shuts the client down when it ends. Without ``run()`` (a one-shot command-line tool) the client works the same,
/// the refresh then happening in the next command that needs the map. Connections are opened and reopened in the
/// task of the command that needs them; no task is ever started by the client. ``shutdown()`` closes every
/// connection, and every later command fails at once with ``RedisError/Code/shutDown``.
public final class RedisClient: Sendable {
    /// How this client reaches Redis.
    public let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let pools: Mutex<[RedisEndpoint: RedisNodePool]>
    /// The pool of the one server, when not in cluster mode: spares a dictionary lookup per command.
    private let standalonePool: RedisNodePool?
    private let cluster: Mutex<ClusterState>
    /// One slot-map refresh at a time, shared by the callers that need it.
    private let topologyRefresh = SingleFlight<ClusterTopology>()

    private struct ClusterState {
        var topology: ClusterTopology?
        /// A redirect said the map is out of date: the next command that needs it learns it again.
        var isStale = false
        var isShutDown = false
        /// Asks ``run()`` for a refresh, while it runs.
        var refreshRequests: AsyncStream<Void>.Continuation?
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

    /// Closes every connection and ends ``run()``. Commands in flight fail with
    /// ``RedisError/Code/connectionClosed``; later ones with ``RedisError/Code/shutDown``, before any connection
    /// is opened.
    public func shutdown() {
        let requests = self.cluster.withLock { state in
            state.isShutDown = true
            defer { state.refreshRequests = nil }
            return state.refreshRequests
        }
        requests?.finish()
        let pools = self.pools.withLock { pools in
            defer { pools = [:] }
            return Array(pools.values)
        }
        for pool in pools { pool.shutdown() }
        self.standalonePool?.shutdown()
    }

    /// Whether ``shutdown()`` was called.
    public var isShutDown: Bool { self.cluster.withLock { $0.isShutDown } }

    /// How many node pools are open (for tests: none after shutdown).
    var openPools: Int { self.pools.withLock { $0.count } }

    /// The client's background work, until ``shutdown()`` or cancellation, after which the client is shut down:
    /// the cluster slot-map refreshes that redirects ask for (a no-op loop for a standalone server). Run it as a
    /// service beside the roles that use the client; one `run()` at a time (a second returns at once).
    public func run() async {
        let (requests, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let installed = self.cluster.withLock { state -> Bool in
            guard !state.isShutDown, state.refreshRequests == nil else { return false }
            state.refreshRequests = continuation
            if state.isStale { continuation.yield() }
            return true
        }
        guard installed else {
            continuation.finish()
            return
        }
        await withTaskCancellationHandler {
            for await _ in requests where self.configuration.isCluster {
                do throws(RedisError) {
                    _ = try await self.refreshedTopology()
                } catch where error.code == .shutDown || error.code == .cancelled {
                    break
                } catch {
                    self.logger.warning("redis cluster slot map refresh failed; the next command tries again", metadata: ["error": "\(error)"])
                }
            }
        } onCancel: {
            continuation.finish()
        }
        self.shutdown()
    }

    private var shutDownError: RedisError {
        RedisError(.shutDown, "the Redis client was shut down; it takes no more commands")
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
            pool = try self.pool(for: try await self.endpoint(for: slot))
        }
        let timeout = timeout ?? self.configuration.commandTimeout
        do throws(RedisError) {
            return try await pool.withDedicatedConnection { connection throws(RedisError) in
                let first = try await connection.send([RedisCommand("WATCH", watch)] + read, timeout: timeout)
                for reply in first {
                    if case .error(let message) = reply {
                        if ClusterRedirect(errorReply: message) != .none { self.markTopologyStale() }
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

    /// The pool of a node, made on first use; refused once the client is shut down (so a late command opens no
    /// pool that nobody would close).
    func pool(for endpoint: RedisEndpoint) throws(RedisError) -> RedisNodePool {
        if let standalone = self.standalonePool, standalone.endpoint == endpoint {
            guard !standalone.isShutDown else { throw self.shutDownError }
            return standalone
        }
        let pool: RedisNodePool? = self.pools.withLock { pools in
            guard !self.isShutDown else { return nil }
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
        guard let pool else { throw self.shutDownError }
        return pool
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
                let pool = try self.pool(for: endpoint)
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
                guard await Backoff.sleep(self.configuration.clusterRetryBackoff.delay(attempt: attempt)) else {
                    throw RedisError(.cancelled, "cancelled while \(command.name) waited to be sent again", underlying: error)
                }
                self.markTopologyStale()
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
                self.markTopologyStale()
                endpoint = target
                asking = false
            case .ask(_, let target):
                endpoint = target
                asking = true
            case .retryLater:
                guard await Backoff.sleep(self.configuration.clusterRetryBackoff.delay(attempt: attempt)) else {
                    throw RedisError(.cancelled, "cancelled while \(command.name) waited for the cluster (\(message))")
                }
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
        let (topology, isStale, isShutDown) = self.cluster.withLock { ($0.topology, $0.isStale, $0.isShutDown) }
        if isShutDown { throw self.shutDownError }
        if let topology, !isStale { return topology }
        do {
            return try await self.refreshedTopology()
        } catch where topology != nil && error.code != .shutDown && error.code != .cancelled {
            // The map we have still serves most slots; the redirects correct the rest.
            return topology!
        }
    }

    /// A redirect moved a slot: the map is out of date. ``run()`` learns it again at once when it runs; the next
    /// command that needs the map does otherwise.
    private func markTopologyStale() {
        let requests = self.cluster.withLock { state in
            state.isStale = true
            return state.refreshRequests
        }
        requests?.yield()
    }

    /// Asks the known masters, then the seeds, for the slot map; concurrent callers share one refresh.
    private func refreshedTopology() async throws(RedisError) -> ClusterTopology {
        try await self.topologyRefresh.run { () throws(RedisError) -> ClusterTopology in
            let candidates = self.cluster.withLock { state in (state.topology?.masters ?? []) + self.configuration.endpoints }
            let topology = try await self.fetchTopology(from: candidates)
            self.cluster.withLock { state in
                state.topology = topology
                state.isStale = false
            }
            self.logger.debug("redis cluster slot map refreshed", metadata: ["redis.masters": "\(topology.masters.map(\.description))"])
            return topology
        }
    }

    private func fetchTopology(from candidates: [RedisEndpoint]) async throws(RedisError) -> ClusterTopology {
        var seen = Set<RedisEndpoint>()
        var lastError: RedisError?
        for endpoint in candidates where seen.insert(endpoint).inserted {
            do throws(RedisError) {
                let pool = try self.pool(for: endpoint)
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
            } catch where error.code == .shutDown || error.code == .cancelled {
                throw error
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
        guard error.code != .cancelled, error.code != .shutDown else { return }
        Counter(label: "markov_redis_errors_total", dimensions: [("code", error.code.description)]).increment()
    }
}
