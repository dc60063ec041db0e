import CompressNIO
import DiscordProtocol
import Foundation
import Logging
import MarkovCore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A fake Discord for tests and benchmarks: a real HTTP and WebSocket server on loopback that speaks Gateway v10
/// and the REST routes the project uses, and misbehaves on demand.
///
/// - `GET /api/v10/gateway/bot` answers discovery (token checked).
/// - `/gateway` takes new connections, `/resume` is the resume URL READY hands out.
/// - Identify is checked (token, intents, shard) and rate-limited per bucket (op 9 `false` when broken, recorded
///   in ``violations``); sessions keep every dispatch for RESUME replays; heartbeats are ACKed; more than 120
///   client payloads in 60 s close with 4008; payloads over 4096 bytes with 4002; `zlib-stream` is honoured.
/// - Faults: ``reconnect(shard:)`` (op 7), ``invalidateSession(shard:resumable:)`` (op 9), ``close(shard:code:)``,
///   ``dropConnection(shard:)``, ``dropHeartbeatACKs(shard:_:)`` (zombie), ``sendRaw(shard:_:)`` (malformed).
public final class FakeDiscord: Sendable {
    /// How the fake behaves.
    public struct Configuration: Sendable {
        public var token = "fake-token"
        public var botUserID = "900000000000000001"
        public var applicationID = "900000000000000002"
        /// Recommended shard count answered by discovery; identifies with another count get 4011 when
        /// ``requireShardCount`` is set.
        public var shards = 1
        public var requireShardCount = false
        public var maxConcurrency = 1
        /// Discord's identify spacing per bucket.
        public var identifyInterval: Duration = .seconds(5)
        public var identifiesRemaining = 1000
        public var heartbeatInterval = 41_250
        /// Whether the MESSAGE_CONTENT privileged intent is enabled for the bot (4014 otherwise).
        public var messageContentAllowed = true
        /// Guild ids sent as GUILD_CREATE after READY, on their shard.
        public var guilds: [String] = []
        /// Client payloads allowed per minute per connection.
        public var sendBudget = 120
        /// The REST side's limits.
        public var rest = FakeREST.Configuration()
        public init() {}
    }

    /// One identify the fake received.
    public struct IdentifyRecord: Sendable, Hashable {
        public var shard: Int
        public var shardCount: Int
        public var bucket: Int
        public var at: ContinuousClock.Instant
        public var accepted: Bool
    }

    public let configuration: Configuration
    /// The REST routes, their record and their faults.
    public let rest: FakeREST
    let logger: Logger
    private let group: any EventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    let state = NIOLockedValueBox(State())

    struct State {
        var sessions: [String: FakeSession] = [:]
        /// The newest session of each shard: dispatches go there.
        var currentSession: [Int: FakeSession] = [:]
        /// The live connection of each shard (after identify or resume).
        var connections: [Int: FakeConnection] = [:]
        var identifies: [IdentifyRecord] = []
        var resumes: [(shard: Int, at: ContinuousClock.Instant)] = []
        var lastIdentify: [Int: ContinuousClock.Instant] = [:]
        var identifiesRemaining = 0
        var violations: [String] = []
        var dropACKs: Set<Int> = []
        var httpRequests: [String] = []
        var closeCodes: [Int] = []

        mutating func endSession(_ id: String) {
            guard let session = self.sessions.removeValue(forKey: id) else { return }
            if self.currentSession[session.shard] === session { self.currentSession.removeValue(forKey: session.shard) }
        }
    }

    public init(configuration: Configuration = .init(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "fake-discord")) {
        self.configuration = configuration
        self.rest = FakeREST(token: configuration.token, configuration: configuration.rest)
        self.group = group
        self.logger = logger
        self.state.withLockedValue { $0.identifiesRemaining = configuration.identifiesRemaining }
    }

    /// Starts listening on `127.0.0.1:port` (0 picks a free port).
    public func start(port: Int = 0) async throws {
        let channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let rest = RESTHandler(fake: self)
                let upgrader = NIOWebSocketServerUpgrader(
                    maxFrameSize: 1 << 20,
                    automaticErrorHandling: false,
                    shouldUpgrade: { channel, head in
                        let path = head.uri.split(separator: "?").first.map(String.init) ?? ""
                        let ok = path.hasPrefix("/gateway") || path.hasPrefix("/resume")
                        return channel.eventLoop.makeSucceededFuture(ok ? HTTPHeaders() : nil)
                    },
                    upgradePipelineHandler: { channel, head in
                        let compress = head.uri.contains("compress=zlib-stream")
                        let connection = FakeConnection(channel: channel, compress: compress, fake: self)
                        return channel.pipeline.addHandler(GatewayConnectionHandler(connection: connection, fake: self))
                            .map { connection.sendHello() }
                    }
                )
                return channel.pipeline.configureHTTPServerPipeline(
                    withServerUpgrade: (
                        upgraders: [upgrader],
                        // After the upgrade the REST handler would see WebSocket bytes: remove it.
                        completionHandler: { context in context.pipeline.removeHandler(rest, promise: nil) }
                    )
                ).flatMap {
                    channel.pipeline.addHandler(rest)
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        self.channel.withLockedValue { $0 = channel }
    }

    /// Stops listening and closes every connection.
    public func stop() async {
        let channel = self.channel.withLockedValue { $0 }
        let connections = self.state.withLockedValue { Array($0.connections.values) }
        for connection in connections { connection.channel.close(promise: nil) }
        try? await channel?.close()
    }

    public var port: Int { self.channel.withLockedValue { $0?.localAddress?.port ?? 0 } }
    public var apiURL: String { "http://127.0.0.1:\(self.port)/api/v10" }
    public var gatewayURL: String { "ws://127.0.0.1:\(self.port)/gateway" }
    var resumeURL: String { "ws://127.0.0.1:\(self.port)/resume" }

    // MARK: - What happened

    public var identifies: [IdentifyRecord] { self.state.withLockedValue { $0.identifies } }
    public var resumeCount: Int { self.state.withLockedValue { $0.resumes.count } }
    /// Every accepted resume: the shard and when.
    public var resumes: [(shard: Int, at: ContinuousClock.Instant)] { self.state.withLockedValue { $0.resumes } }
    /// Broken rules: identifies inside a bucket's interval, send budget exceeded, bad payloads.
    public var violations: [String] { self.state.withLockedValue { $0.violations } }
    public var httpRequests: [String] { self.state.withLockedValue { $0.httpRequests } }
    /// Close codes received from clients.
    public var clientCloseCodes: [Int] { self.state.withLockedValue { $0.closeCodes } }

    /// The shards with a live, identified or resumed connection.
    public var connectedShards: Set<Int> { self.state.withLockedValue { Set($0.connections.keys) } }

    /// Waits until every shard in `shards` has a live connection.
    public func waitForShards(_ shards: some Sequence<Int>, timeout: Duration = .seconds(60)) async throws {
        let wanted = Set(shards)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while !wanted.isSubset(of: self.connectedShards) {
            guard ContinuousClock.now < deadline else {
                throw FakeDiscordError("shards \(wanted.subtracting(self.connectedShards).sorted()) did not connect")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    // MARK: - Dispatches

    /// Sends a dispatch on a shard's session (buffered for replay; sent now when connected). Returns its seq, or nil
    /// when the session's intents do not receive the event (as Discord, which sends GUILD_MEMBER_REMOVE only to
    /// sessions identified with GUILD_MEMBERS).
    @discardableResult
    public func dispatch(shard: Int, event: String, json: String) throws -> Int? {
        guard let session = self.state.withLockedValue({ $0.currentSession[shard] }) else {
            throw FakeDiscordError("no session on shard \(shard)")
        }
        if let intent = Self.intents[event], session.intents & intent.rawValue == 0 { return nil }
        return session.dispatch(event: event, json: json)
    }

    /// The intent a dispatch needs, for the events the fake sends that need one beyond what every bot identifies with.
    static let intents: [String: GatewayIntents] = ["GUILD_MEMBER_REMOVE": .guildMembers]

    /// A MESSAGE_CREATE payload's `d`.
    public static func messageJSON(id: UInt64, channel: UInt64, guild: UInt64, author: UInt64, content: String,
                                   bot: Bool = false, roles: [UInt64] = [], attachments: [String] = []) -> String {
        let roleList = roles.map { "\"\($0)\"" }.joined(separator: ",")
        let attachmentList = attachments.enumerated().map { index, url in
            "{\"id\":\"\(id)\(index)\",\"filename\":\"f\(index).png\",\"size\":1,\"url\":\(jsonString(url)),\"proxy_url\":\(jsonString(url))}"
        }.joined(separator: ",")
        return "{\"id\":\"\(id)\",\"channel_id\":\"\(channel)\",\"guild_id\":\"\(guild)\",\"author\":{\"id\":\"\(author)\",\"username\":\"u\(author)\"\(bot ? ",\"bot\":true" : "")},\"member\":{\"roles\":[\(roleList)]},\"content\":\(jsonString(content)),\"type\":0,\"mentions\":[],\"attachments\":[\(attachmentList)],\"timestamp\":\"2024-01-01T00:00:00.000000+00:00\"}"
    }

    /// A JSON string literal.
    public static func jsonString(_ text: String) -> String {
        String(decoding: try! JSONEncoder().encode(text), as: UTF8.self)
    }

    // MARK: - Faults

    /// Sends op 7 (reconnect) on a shard's connection.
    public func reconnect(shard: Int) { self.connection(shard)?.send("{\"op\":7,\"d\":null}") }

    /// Sends op 9; a non-resumable one forgets the session.
    public func invalidateSession(shard: Int, resumable: Bool) {
        guard let connection = self.connection(shard) else { return }
        if !resumable, let id = connection.sessionID { self.state.withLockedValue { $0.endSession(id) } }
        connection.send("{\"op\":9,\"d\":\(resumable)}")
    }

    /// Closes a shard's connection with a close code (4003, 4007 and 4009 also end its session).
    public func close(shard: Int, code: Int) {
        guard let connection = self.connection(shard) else { return }
        if [4003, 4007, 4009].contains(code), let id = connection.sessionID {
            self.state.withLockedValue { $0.endSession(id) }
        }
        connection.close(code: code)
    }

    /// Drops a shard's TCP connection without a close frame.
    public func dropConnection(shard: Int) { self.connection(shard)?.channel.close(promise: nil) }

    /// Stops (or resumes) answering a shard's heartbeats: the client should see a zombie connection.
    public func dropHeartbeatACKs(shard: Int, _ drop: Bool) {
        self.state.withLockedValue { if drop { $0.dropACKs.insert(shard) } else { $0.dropACKs.remove(shard) } }
    }

    /// Sends raw text (malformed JSON, oversized payloads) on a shard's connection.
    public func sendRaw(shard: Int, _ text: String) { self.connection(shard)?.send(text) }

    private func connection(_ shard: Int) -> FakeConnection? {
        self.state.withLockedValue { $0.connections[shard] }
    }

    // MARK: - Protocol (called by connections)

    func received(_ text: String, on connection: FakeConnection) {
        guard text.utf8.count <= 4096 else {
            self.violation("payload over 4096 bytes")
            return connection.close(code: 4002)
        }
        guard connection.countPayload(limit: self.configuration.sendBudget) else {
            self.violation("send budget exceeded")
            return connection.close(code: 4008)
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let op = object["op"] as? Int
        else { return connection.close(code: 4002) }
        let d = object["d"]
        switch op {
        case 1:
            let drop = connection.shard.map { shard in self.state.withLockedValue { $0.dropACKs.contains(shard) } } ?? false
            if !drop { connection.send("{\"op\":11}") }
        case 2:
            self.identify(d as? [String: Any] ?? [:], on: connection)
        case 6:
            self.resume(d as? [String: Any] ?? [:], on: connection)
        default:
            connection.close(code: 4001)
        }
    }

    private func identify(_ d: [String: Any], on connection: FakeConnection) {
        guard connection.sessionID == nil else { return connection.close(code: 4005) }
        guard d["token"] as? String == self.configuration.token else { return connection.close(code: 4004) }
        guard let shardPair = d["shard"] as? [Int], shardPair.count == 2, shardPair[1] > 0 else {
            return connection.close(code: 4010)
        }
        let (shard, count) = (shardPair[0], shardPair[1])
        guard shard < count else { return connection.close(code: 4010) }
        if self.configuration.requireShardCount, count < self.configuration.shards { return connection.close(code: 4011) }
        guard let intents = d["intents"] as? Int, intents >= 0, intents < (1 << 26) else {
            return connection.close(code: 4013)
        }
        if intents & GatewayIntents.messageContent.rawValue != 0, !self.configuration.messageContentAllowed {
            return connection.close(code: 4014)
        }
        let bucket = shard % max(1, self.configuration.maxConcurrency)
        let now = ContinuousClock.now
        let accepted = self.state.withLockedValue { state -> Bool in
            let previous = state.lastIdentify[bucket]
            let ok = previous.map { now - $0 >= self.configuration.identifyInterval } ?? true
            state.identifies.append(IdentifyRecord(shard: shard, shardCount: count, bucket: bucket, at: now, accepted: ok))
            if ok {
                state.lastIdentify[bucket] = now
                state.identifiesRemaining -= 1
            } else {
                state.violations.append("identify of shard \(shard) inside bucket \(bucket)'s interval")
            }
            return ok
        }
        guard accepted else { return connection.send("{\"op\":9,\"d\":false}") }
        let session = FakeSession(id: UUID().uuidString.lowercased(), shard: shard, intents: intents)
        self.state.withLockedValue { state in
            // Two live sessions of one shard: two processes hold it.
            if let live = state.connections[shard], live !== connection, live.channel.isActive {
                state.violations.append("shard \(shard) identified while another connection holds a session of it")
            }
            // A new identify supersedes the shard's earlier session.
            if let old = state.currentSession[shard] { state.sessions.removeValue(forKey: old.id) }
            state.sessions[session.id] = session
            state.currentSession[shard] = session
            state.connections[shard] = connection
        }
        connection.attach(session: session, shard: shard)
        let ready = """
            {"v":10,"session_id":"\(session.id)","resume_gateway_url":"\(self.resumeURL)","shard":[\(shard),\(count)],\
            "user":{"id":"\(self.configuration.botUserID)","username":"markov","bot":true},\
            "application":{"id":"\(self.configuration.applicationID)"},"guilds":[]}
            """
        session.attach(connection)
        session.dispatch(event: "READY", json: ready)
        for guild in self.configuration.guilds where ShardID.shard(of: .init(guild)!, count: count) == shard {
            session.dispatch(event: "GUILD_CREATE", json: "{\"id\":\"\(guild)\",\"name\":\"guild \(guild)\",\"channels\":[]}")
        }
    }

    private func resume(_ d: [String: Any], on connection: FakeConnection) {
        guard d["token"] as? String == self.configuration.token else { return connection.close(code: 4004) }
        guard let id = d["session_id"] as? String, let seq = d["seq"] as? Int,
              let session = self.state.withLockedValue({ $0.sessions[id] })
        else { return connection.send("{\"op\":9,\"d\":false}") }
        let previous = self.state.withLockedValue { state -> FakeConnection? in
            state.resumes.append((session.shard, .now))
            defer { state.connections[session.shard] = connection }
            return state.connections[session.shard]
        }
        if let previous, previous !== connection { previous.channel.close(promise: nil) }
        connection.attach(session: session, shard: session.shard)
        session.resume(on: connection, after: seq)
    }

    func closed(_ connection: FakeConnection, clientCode: Int?) {
        self.state.withLockedValue { state in
            if let code = clientCode { state.closeCodes.append(code) }
            if let shard = connection.shard, state.connections[shard] === connection {
                state.connections.removeValue(forKey: shard)
            }
            // Closing with 1000 or 1001 ends the session.
            if let code = clientCode, code == 1000 || code == 1001, let id = connection.sessionID {
                state.endSession(id)
            }
        }
        connection.session?.detach(connection)
    }

    /// Discovery here (it needs the port and the identify count), everything else in ``rest``.
    func handleREST(method: String, path: String, query: String, authorization: String?, contentType: String?, body: [UInt8]) -> FakeREST.Answer {
        guard method == "GET", path == "/api/v10/gateway/bot" else {
            return self.rest.handle(method: method, path: path, query: query, authorization: authorization, contentType: contentType, body: body)
        }
        guard authorization == "Bot \(self.configuration.token)" else {
            return FakeREST.Answer(status: 401, body: #"{"message":"401: Unauthorized","code":0}"#)
        }
        let remaining = self.state.withLockedValue { $0.identifiesRemaining }
        return FakeREST.Answer(status: 200, body: """
            {"url":"ws://127.0.0.1:\(self.port)/gateway","shards":\(self.configuration.shards),\
            "session_start_limit":{"total":\(self.configuration.identifiesRemaining),"remaining":\(remaining),\
            "reset_after":14400000,"max_concurrency":\(self.configuration.maxConcurrency)}}
            """)
    }

    /// Sends an INTERACTION_CREATE for a slash command and starts its callback deadline. Returns its id.
    @discardableResult
    public func dispatchInteraction(
        shard: Int, id: UInt64, guild: UInt64, channel: UInt64, user: UInt64, name: String, options: String = "[]",
        permissions: String = "0", token: String? = nil, roles: [UInt64] = []
    ) throws -> String {
        let json = """
            {"id":"\(id)","application_id":"\(self.configuration.applicationID)","type":2,"token":"\(token ?? "itoken-\(id)")",\
            "guild_id":"\(guild)","channel_id":"\(channel)","member":{"user":{"id":"\(user)"},"permissions":"\(permissions)",\
            "roles":[\(roles.map { "\"\($0)\"" }.joined(separator: ","))]},"data":{"id":"1","name":"\(name)","type":1,"options":\(options)}}
            """
        self.rest.interactionCreated(String(id))
        try self.dispatch(shard: shard, event: "INTERACTION_CREATE", json: json)
        return String(id)
    }

    func recordHTTP(_ line: String) { self.state.withLockedValue { $0.httpRequests.append(line) } }

    private func violation(_ text: String) { self.state.withLockedValue { $0.violations.append(text) } }
}

/// A failure of the fake itself (misuse in a test).
public struct FakeDiscordError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
