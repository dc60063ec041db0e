import DiscordProtocol
import Foundation
import Logging
import MarkovCore
import CoreMetrics
import NIOCore
import NIOWebSocket
import Redis
import Synchronization
import WSClient

/// One shard: connects, identifies or resumes, heartbeats, hands dispatches to the ``EventPump``, and reconnects
/// until stopped or a fatal close code. The protocol decisions are ``GatewayStateMachine``'s; this type only
/// carries them out over a WebSocket.
final class ShardRunner: Sendable {
    /// Where and how the shard connects (shared by the shards of a process).
    struct Settings: Sendable {
        var token: String
        var intents: GatewayIntents
        /// The discovery URL (`wss://gateway.discord.gg`), used for identifies.
        var gatewayURL: String
        var compress: Bool
        var maxConcurrency: Int
        var identifyInterval: Duration
        var maxMessageSize: Int
        var reconnectBackoffCap: Duration
        var name: String
        /// Unique per process: the owner of identify slots.
        var owner: String
    }

    /// What a shard has done, for logs, tests and metrics.
    struct Statistics: Sendable, Hashable {
        var connects = 0
        var identifies = 0
        var resumes = 0
        var dispatches = 0
        var skippedFrames = 0
        var zombies = 0
        var ready = false
    }

    let shard: ShardID
    private let settings: Settings
    private let machine: Mutex<GatewayStateMachine>
    private let pump: EventPump
    /// Thread id → its channel, from this shard's thread events (see ``withThreadParent(_:)``).
    private let threadParents = Mutex<[String: String]>([:])
    private let store: GatewayStore
    private let logger: Logger
    private let budget = Mutex(SendBudget())
    private let outbound = Mutex<WebSocketOutboundWriter?>(nil)
    /// The task running the current connection.
    private let connection = Mutex<Task<WebSocketCloseFrame?, any Error>?>(nil)
    /// When a close this client sent must have completed; past it the connection is cut.
    private let closeDeadline = Mutex<ContinuousClock.Instant?>(nil)
    private let stopping = Atomic<Bool>(false)
    private let counters = Mutex(Statistics())
    private let live = Atomic<Bool>(false)
    /// An identify is out and its READY not yet queued with its checkpoint.
    private let identifying = Atomic<Bool>(false)
    /// How long ``stop()`` lets an identify that is out reach its READY.
    static let readyWait: Duration = .seconds(5)

    /// Whether the shard's current connection is identified or resumed.
    var isReady: Bool { self.live.load(ordering: .relaxed) }

    /// The lease this holding of the shard is fenced by (none for a shard not leased).
    let fence: ShardFence?

    init(shard: ShardID, session: GatewaySession?, settings: Settings, pump: EventPump, store: GatewayStore,
         fence: ShardFence? = nil, logger: Logger) {
        self.shard = shard
        self.fence = fence
        self.settings = settings
        self.machine = Mutex(GatewayStateMachine(shard: shard, restoring: session))
        self.pump = pump
        self.store = store
        var logger = logger
        logger[metadataKey: "shard"] = "\(shard)"
        self.logger = logger
    }

    var statistics: Statistics { self.counters.withLock { $0 } }

    /// Runs until ``stop()`` or a fatal close code; a fatal code is thrown as ``GatewayShardError``.
    func run() async throws {
        var failures = 0
        while !self.isStopping {
            let (resume, url) = self.machine.withLock { ($0.session != nil, $0.connectURL) }
            if !resume {
                let bucket = self.shard.bucket(maxConcurrency: self.settings.maxConcurrency)
                let acquired: Bool
                do {
                    acquired = try await self.store.acquireIdentifySlot(
                        maxConcurrency: self.settings.maxConcurrency, bucket: bucket,
                        interval: self.settings.identifyInterval, owner: self.slotOwner,
                        stop: { self.isStopping }
                    )
                } catch {
                    self.logger.warning("cannot take an identify slot; Redis unreachable", metadata: ["error": "\(error)"])
                    await self.pause(Self.backoff(failures + 1, cap: self.settings.reconnectBackoffCap))
                    failures += 1
                    continue
                }
                guard acquired else { break }
            }
            let identifiesBefore = self.counters.withLock { $0.identifies }
            let closeCode = await self.connectOnce(url: url ?? self.settings.gatewayURL)
            self.live.store(false, ordering: .relaxed)
            self.identifying.store(false, ordering: .relaxed)
            if !resume, self.counters.withLock({ $0.identifies }) == identifiesBefore {
                // The slot was taken for an identify that never went out: let the bucket's next shard have it.
                try? await self.store.releaseIdentifySlot(
                    maxConcurrency: self.settings.maxConcurrency,
                    bucket: self.shard.bucket(maxConcurrency: self.settings.maxConcurrency), owner: self.slotOwner
                )
            }
            let reachedReady = self.counters.withLock { state in
                defer { state.ready = false }
                return state.ready
            }
            failures = reachedReady ? 0 : failures + 1
            let step = self.machine.withLock { $0.closed(code: closeCode) }
            switch step {
            case .stop(let reason):
                if self.isStopping { return }
                self.logger.error("shard stopped", metadata: ["reason": "\(reason)"])
                throw GatewayShardError(shard: self.shard, reason: reason)
            case .reconnect(let resume, _, let delay):
                let wait = failures <= 1 ? delay : max(delay, Self.backoff(failures, cap: self.settings.reconnectBackoffCap))
                self.logger.info(
                    "reconnecting",
                    metadata: ["resume": "\(resume)", "close_code": "\(closeCode.map(String.init) ?? "none")",
                               "delay_ms": "\(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000)"]
                )
                await self.pause(wait)
            }
        }
    }

    /// Remembers the channel of each thread this connection announces (GUILD_CREATE, THREAD_CREATE, …), and puts it
    /// in the events of messages in those threads: Discord sends a thread's announcement before its messages, so a
    /// new thread's first messages carry their channel even when trainers apply them before the thread's own event.
    /// (Threads announced before a restart are found by the trainers' record of them instead.)
    private func withThreadParent(_ event: ChainEvent?) -> ChainEvent? {
        guard var event else { return nil }
        switch event.kind {
        case .threads:
            self.threadParents.withLock { parents in
                if parents.count > Self.maxKnownThreads { parents.removeAll() }
                for (thread, parent) in zip(event.messageIDs, event.threadParents) { parents[thread] = parent }
            }
        case .create:
            if let channel = event.channelID, let parent = self.threadParents.withLock({ $0[channel.rawValue] }) {
                event.threadParent = Snowflake(parent)
            }
        default:
            break
        }
        return event
    }

    /// Threads remembered per shard before the memory is cleared (about 100 bytes each).
    private static let maxKnownThreads = 200_000

    /// Who holds an identify slot taken by this shard.
    private var slotOwner: String { "\(self.settings.owner)/\(self.shard.id)" }

    /// Stopping: asked to, or the task was cancelled.
    private var isStopping: Bool { self.stopping.load(ordering: .relaxed) || Task.isCancelled }

    /// Asks the shard to stop: it closes its connection with a resumable code (the session stays in Redis for
    /// whoever runs this shard next) and ``run()`` returns.
    /// An identify that is out is first let reach its READY (for ``readyWait`` at most): stopped before it, the
    /// session would be lost and whoever runs the shard next would have to identify again.
    func stop() async {
        let deadline = ContinuousClock.now + Self.readyWait
        while self.identifying.load(ordering: .relaxed) && ContinuousClock.now < deadline {
            guard await Backoff.sleep(.milliseconds(20)) else { break }
        }
        self.stopping.store(true, ordering: .relaxed)
        let actions = self.machine.withLock { $0.shutdown() }
        if let outbound = self.outbound.withLock({ $0 }) {
            _ = await self.perform(actions, outbound: outbound)
        }
    }

    // MARK: - One connection

    /// Connects, runs the connection to its end, and returns the server's close code (nil for a drop).
    private func connectOnce(url: String) async -> Int? {
        var fullURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        fullURL += "/?v=10&encoding=json"
        if self.settings.compress { fullURL += "&compress=zlib-stream" }
        self.counters.withLock { $0.connects += 1 }
        GatewayMetrics.connects.increment()
        let configuration = WebSocketClientConfiguration(
            maxFrameSize: self.settings.maxMessageSize, closeTimeout: .seconds(2)
        )
        // The connection runs in a task of its own, outside the service's graceful-shutdown scope: the WebSocket
        // library would otherwise close with 1000 on shutdown, which ends the Discord session. Shutdown goes
        // through ``stop()`` (a resumable close) instead; cancellation is passed on.
        let logger = self.logger
        let task = Task.detached {
            try await WebSocketClient.connect(url: fullURL, configuration: configuration, logger: logger) { inbound, outbound, _ in
                try await self.handle(inbound: inbound, outbound: outbound)
            }
        }
        self.connection.withLock { $0 = task }
        self.closeDeadline.withLock { $0 = nil }
        defer { self.connection.withLock { $0 = nil } }
        do {
            let closeFrame = try await withTaskCancellationHandler {
                try await withThrowingTaskGroup(of: WebSocketCloseFrame??.self) { group in
                    group.addTask { .some(try await task.value) }
                    // Cuts the connection when a close it sent is not answered in time.
                    group.addTask {
                        while !Task.isCancelled {
                            if let deadline = self.closeDeadline.withLock({ $0 }), ContinuousClock.now >= deadline {
                                task.cancel()
                                break
                            }
                            guard await Backoff.sleep(.milliseconds(100)) else { break }
                        }
                        return .none
                    }
                    while let outcome = try await group.next() {
                        if let frame = outcome {
                            group.cancelAll()
                            return frame
                        }
                    }
                    return nil
                }
            } onCancel: {
                task.cancel()
            }
            return closeFrame.map { Int(UInt16(webSocketErrorCode: $0.closeCode)) }
        } catch {
            self.logger.warning("connection ended", metadata: ["url": "\(url)", "error": "\(error)"])
            return nil
        }
    }

    private func handle(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        self.outbound.withLock { $0 = outbound }
        defer { self.outbound.withLock { $0 = nil } }
        self.machine.withLock { $0.connected() }
        if self.stopping.load(ordering: .relaxed) {
            try await outbound.close(.unknown(UInt16(GatewayClientCloseCode.resumable)), reason: "shutting down")
            return
        }
        var inflater = self.settings.compress ? try ZlibStreamInflater(maxOutput: self.settings.maxMessageSize) : nil
        try await withThrowingTaskGroup(of: Void.self) { group in
            defer { group.cancelAll() }
            for try await message in inbound.messages(maxSize: self.settings.maxMessageSize) {
                let bytes: Data
                switch message {
                case .text(let text):
                    bytes = Data(text.utf8)
                case .binary(let buffer):
                    if inflater != nil {
                        do {
                            guard let inflated = try inflater!.feed(buffer) else { continue }
                            bytes = Data(inflated.readableBytesView)
                        } catch let error as ZlibStreamInflater.Oversized {
                            self.counters.withLock { $0.skippedFrames += 1 }
                            GatewayMetrics.skipped.increment()
                            self.logger.warning("skipping an oversized payload", metadata: ["error": "\(error)"])
                            continue
                        } catch {
                            // The inflate context is broken: nothing after this can be read. Resume afresh.
                            self.logger.warning("zlib-stream payload cannot be inflated; resuming", metadata: ["error": "\(error)"])
                            inflater = nil
                            let actions = self.machine.withLock { $0.closeToResume(reason: "inflate error") }
                            _ = await self.perform(actions, outbound: outbound)
                            continue
                        }
                    } else {
                        bytes = Data(buffer.readableBytesView)
                    }
                }
                let frame: GatewayFrame
                do {
                    frame = try GatewayFrame.decode(bytes)
                } catch {
                    self.counters.withLock { $0.skippedFrames += 1 }
                    GatewayMetrics.skipped.increment()
                    self.logger.warning(
                        "skipping a payload that cannot be decoded",
                        metadata: ["bytes": "\(bytes.count)", "error": "\(error)",
                                   "start": "\(String(decoding: bytes.prefix(120), as: UTF8.self))"]
                    )
                    continue
                }
                let actions = self.machine.withLock { $0.received(frame) }
                if let interval = await self.perform(actions, outbound: outbound) {
                    group.addTask { try await self.heartbeat(every: interval, outbound: outbound) }
                }
            }
        }
    }

    private func heartbeat(every interval: Duration, outbound: WebSocketOutboundWriter) async throws {
        try await Task.sleep(for: interval * Double.random(in: 0..<1))
        while true {
            let actions = self.machine.withLock { $0.heartbeatDue() }
            _ = await self.perform(actions, outbound: outbound)
            try await Task.sleep(for: interval)
        }
    }

    /// Carries out actions; returns the heartbeat interval when heartbeating is to start.
    private func perform(_ actions: [GatewayStateMachine.Action], outbound: WebSocketOutboundWriter) async -> Duration? {
        var heartbeat: Duration?
        for action in actions {
            switch action {
            case .startHeartbeating(let interval):
                heartbeat = interval
            case .identify:
                self.counters.withLock { $0.identifies += 1 }
                GatewayMetrics.identifies.increment()
                self.identifying.store(true, ordering: .relaxed)
                await self.send(
                    .identify(token: self.settings.token, intents: self.settings.intents, shard: self.shard,
                              name: self.settings.name),
                    outbound: outbound
                )
                // The slot was taken before connecting; restart its interval now that the identify is out.
                try? await self.store.markIdentify(
                    maxConcurrency: self.settings.maxConcurrency,
                    bucket: self.shard.bucket(maxConcurrency: self.settings.maxConcurrency),
                    interval: self.settings.identifyInterval, owner: self.slotOwner
                )
                let left: Int?? = try? await self.store.countIdentify()
                let leftText = left.flatMap { $0 }.map(String.init) ?? "unknown"
                if let count = left.flatMap({ $0 }) { GatewayMetrics.identifiesLeft.record(count) }
                self.logger.info("identified", metadata: ["identifies_left": "\(leftText)"])
            case .resume(let sessionID, let sequence):
                self.counters.withLock { $0.resumes += 1 }
                GatewayMetrics.resumes.increment()
                await self.send(.resume(token: self.settings.token, sessionID: sessionID, sequence: sequence), outbound: outbound)
                self.logger.info("resuming", metadata: ["seq": "\(sequence)"])
            case .sendHeartbeat(let sequence):
                await self.send(.heartbeat(sequence: sequence), outbound: outbound)
            case .sessionStarted(let ready):
                self.counters.withLock { $0.ready = true }
                self.live.store(true, ordering: .relaxed)
                self.logger.info("ready", metadata: ["bot_user": "\(ready.user.id)"])
                do { try await self.store.saveBotUser(ready) } catch {
                    self.logger.warning("cannot record the bot user", metadata: ["error": "\(error)"])
                }
            case .resumed:
                self.counters.withLock { $0.ready = true }
                self.live.store(true, ordering: .relaxed)
                self.logger.info("resumed")
            case .dispatch(let frame):
                self.counters.withLock { $0.dispatches += 1 }
                GatewayMetrics.dispatches.increment()
                let checkpoint = self.machine.withLock { $0.checkpoint }
                let events = frame.chainEvents(shard: self.shard.id)
                if events.isEmpty {
                    await self.pump.submit(shard: self.shard.id, event: nil, checkpoint: checkpoint, fence: self.fence)
                }
                // The session is checkpointed with the last event of the frame: a resume replays all or none of them.
                for (index, event) in events.enumerated() {
                    await self.pump.submit(
                        shard: self.shard.id, event: self.withThreadParent(event), checkpoint: index == events.count - 1 ? checkpoint : nil, fence: self.fence
                    )
                }
                if checkpoint != nil { self.identifying.store(false, ordering: .relaxed) }
            case .close(let code, let reason):
                if reason.hasPrefix("zombie") {
                    self.counters.withLock { $0.zombies += 1 }
                    GatewayMetrics.zombies.increment()
                }
                self.logger.info("closing the connection", metadata: ["code": "\(code)", "reason": "\(reason)"])
                // A server that never answers the close (a zombie, say) must not hold the shard: the connection
                // is cut after a grace period (by the watcher in ``connectOnce(url:)``).
                self.closeDeadline.withLock { $0 = ContinuousClock.now + .seconds(2) }
                try? await outbound.close(.unknown(UInt16(code)), reason: reason)
            }
        }
        return heartbeat
    }

    /// Sends one payload inside the send budget.
    private func send(_ command: GatewayCommand, outbound: WebSocketOutboundWriter) async {
        while true {
            let wait = self.budget.withLock { $0.reserve(at: .now) }
            if wait == .zero { break }
            self.logger.debug("send budget exhausted; waiting", metadata: ["wait": "\(wait)"])
            // Cancelled: the connection is going; nothing is sent (a cancelled sleep would spin here).
            guard await Backoff.sleep(wait) else { return }
        }
        do {
            try await outbound.write(.text(command.json))
        } catch {
            self.logger.debug("send failed; the connection is closing", metadata: ["error": "\(error)"])
        }
    }

    /// Sleeps, waking early when the shard is stopped.
    private func pause(_ duration: Duration) async {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: duration)
        while !self.stopping.load(ordering: .relaxed), clock.now < end {
            guard await Backoff.sleep(min(.milliseconds(100), end - clock.now)) else { return }
        }
    }

    /// Capped exponential backoff with full jitter.
    static func backoff(_ failures: Int, cap: Duration) -> Duration {
        let ceiling = min(cap, .milliseconds(250) * (1 << min(failures, 10)))
        return ceiling * Double.random(in: 0.5...1)
    }
}

/// A shard stopped for a reason retrying cannot fix (a fatal close code).
public struct GatewayShardError: Error, Sendable, CustomStringConvertible {
    public var shard: ShardID
    public var reason: String
    public var description: String { "shard \(self.shard) stopped: \(self.reason)" }
}

/// The gateway's metrics (swift-metrics; Prometheus when the process bootstraps it).
enum GatewayMetrics {
    static let connects = Counter(label: "markov_gateway_connects_total")
    static let identifies = Counter(label: "markov_gateway_identifies_total")
    static let resumes = Counter(label: "markov_gateway_resumes_total")
    static let dispatches = Counter(label: "markov_gateway_dispatches_total")
    static let skipped = Counter(label: "markov_gateway_skipped_payloads_total")
    static let zombies = Counter(label: "markov_gateway_zombies_total")
    static let appended = Counter(label: "markov_gateway_events_appended_total")
    static let appendFailures = Counter(label: "markov_gateway_append_failures_total")
    static let identifiesLeft = Gauge(label: "markov_gateway_identifies_left")
    static let shards = Gauge(label: "markov_gateway_shards")
    static let shardsReady = Gauge(label: "markov_gateway_shards_ready")
    static let shardCount = Gauge(label: "markov_gateway_shard_count")
    static func held(_ shard: Int) -> Gauge { Gauge(label: "markov_gateway_shard_held", dimensions: [("shard", "\(shard)")]) }

    /// Creates every counter at 0 (rate() and increase() see the first event).
    static func register() {
        for counter in [connects, identifies, resumes, dispatches, skipped, zombies, appended, appendFailures] { counter.increment(by: 0) }
    }
}
