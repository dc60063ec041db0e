import DiscordREST
import Foundation
import Hummingbird
import Logging
import MarkovChains
import MarkovCore
import NIOCore
import Observability
import Redis
import ServiceLifecycle
import Synchronization

/// The web console of `markov up`: a page (chat, learning, inspect, system) and the JSON and Server-Sent Events
/// endpoints it uses, over HTTP (hummingbird). Its `run()` owns its background work: the server, the imports
/// uploaded from the page, and the monitor that samples the guild and the metrics once a second while a page
/// listens. Endpoints are described in docs/web-console.md.
public final class WebConsole: Service, Sendable {
    public struct Configuration: Sendable {
        /// Where it listens; a host other than loopback needs `token`.
        public var host = "127.0.0.1"
        /// Port 0: any free port (the URL printed says which).
        public var port = WebConsole.defaultPort
        /// Required in every API request (`?token=` or `X-Markov-Token`) when set.
        public var token: String?
        /// The largest JSON body (a chat message), and the largest history file uploaded.
        public var maxBodyBytes = 64 << 10
        public var maxUploadBytes = 1 << 30
        /// How often a listening page gets a sample, and how often the guild's bytes are measured.
        public var tick: Duration = .seconds(1)
        public var footprintEvery: Duration = .seconds(5)
        /// Where uploads are kept while they are imported.
        public var uploadDirectory = FileManager.default.temporaryDirectory.path

        public init() {}
    }

    /// The port `markov up` serves on unless told otherwise.
    public static let defaultPort = 8377

    public let configuration: Configuration
    let conversation: ConsoleConversation
    let store: ChainStore
    let log: EventLog
    let rateLimits: SharedRateLimits?
    /// Called before each metrics sample (the gateway records its shard gauges there).
    let beforeSample: @Sendable () -> Void
    let logger: Logger
    let assets: Assets
    let imports = ImportJobs()
    let monitor: Monitor
    /// The sampler of `GET /api/system`.
    let systemSampler = Mutex(MetricsSampler())
    private let announce: @Sendable (String) -> Void

    /// Makes the console; `announce` is told its URL once it listens (`markov up` prints it).
    public init(
        configuration: Configuration, conversation: ConsoleConversation, rateLimits: SharedRateLimits? = nil,
        beforeSample: @escaping @Sendable () -> Void = {}, logger: Logger, announce: @escaping @Sendable (String) -> Void
    ) throws {
        self.configuration = configuration
        self.conversation = conversation
        self.store = conversation.store
        self.log = conversation.log
        self.rateLimits = rateLimits
        self.beforeSample = beforeSample
        self.logger = logger
        self.assets = try Assets.load()
        self.announce = announce
        self.monitor = Monitor()
    }

    /// Whether the server came up, set from its callback.
    private final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// The console could not start listening (the port is taken, say).
    public struct ListenError: Error, CustomStringConvertible {
        public var description: String
    }

    /// A token good enough to guard a console reachable from the network: 128 random bits, hex.
    public static func makeToken() -> String {
        (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    public func run() async throws {
        let router = Router()
        router.add(middleware: Guard(token: self.configuration.token, logger: self.logger))
        self.routes(router)
        var quiet = self.logger
        quiet.logLevel = max(self.logger.logLevel, .notice)
        let configuration = self.configuration
        let listening = Flag()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "markov-console"),
            onServerRunning: { [announce] channel in
                listening.value.store(true, ordering: .relaxed)
                let port = channel.localAddress?.port ?? configuration.port
                let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
                announce("http://\(host):\(port)/" + (configuration.token.map { "?token=\($0)" } ?? ""))
            },
            logger: quiet
        )
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                do {
                    try await app.run()
                } catch where !listening.value.load(ordering: .relaxed) {
                    throw ListenError(description: """
                        the web console cannot listen on \(configuration.host):\(configuration.port) (\(error)); \
                        choose another port with --web-port N (0: any free one), or run without it: --no-web
                        """)
                }
            }
            group.addTask { await self.runImports() }
            group.addTask { await self.runMonitor() }
        }
    }

    // MARK: Imports

    /// Runs the uploaded imports one after another until graceful shutdown; the files of imports not started by
    /// then are removed.
    private func runImports() async {
        for await job in self.imports.queue.cancelOnGracefulShutdown() {
            let importer = ConsoleImport(log: self.log, guild: self.conversation.guild)
            let jobs = self.imports
            do {
                // A graceful shutdown stops the import (the trainer that would apply it is stopping too); what was
                // appended stays in the log and is learnt at the next start.
                _ = try await cancelWhenGracefulShutdown {
                    try await importer.run(file: job.file) { progress in
                        try Task.checkCancellation()
                        jobs.update(job.id, progress)
                    }
                }
                self.logger.info("web console import done", metadata: ["import": "\(job.id)", "file": "\(job.name)"])
            } catch {
                var progress = jobs.progress(job.id) ?? .init()
                progress.phase = .failed
                progress.error = Task.isShuttingDownGracefully || Task.isCancelled
                    ? "stopped: the console shut down (what was read is learnt at the next start)"
                    : "\(error)".replacingOccurrences(of: job.file, with: job.name)
                jobs.update(job.id, progress)
                self.logger.warning("web console import failed", metadata: ["import": "\(job.id)", "error": "\(error)"])
            }
            try? FileManager.default.removeItem(atPath: job.file)
        }
        for file in self.imports.finish() { try? FileManager.default.removeItem(atPath: file) }
    }

    // MARK: The monitor

    /// Samples once a tick while a page listens and hands the sample to every listener; on graceful shutdown
    /// ends every page's stream, so that the server can stop.
    private func runMonitor() async {
        await withGracefulShutdownHandler {
            var sampler = MetricsSampler()
            var footprint: (value: ChainStore.Footprint, at: ContinuousClock.Instant)?
            let clock = ContinuousClock()
            while !self.monitor.isFinished && !Task.isCancelled {
                guard self.monitor.hasListeners else {
                    sampler = MetricsSampler()
                    await self.monitor.waitForListener()
                    continue
                }
                if footprint == nil || clock.now - footprint!.at >= self.configuration.footprintEvery {
                    if let measured = try? await self.store.footprint(guild: self.conversation.guild) { footprint = (measured, clock.now) }
                }
                let tick = await self.sample(&sampler, footprint: footprint.map { ($0.value, clock.now - $0.at) })
                self.monitor.publish(tick)
                try? await Task.sleep(for: self.configuration.tick)
            }
        } onGracefulShutdown: {
            self.monitor.finish()
        }
    }

    /// One sample: the guild's totals and bytes, the metrics as rates, imports, and with Discord the limits.
    func sample(_ sampler: inout MetricsSampler, footprint: (ChainStore.Footprint, Duration)?) async -> Data {
        self.beforeSample()
        let text = Observability.exposition()
        let now = Date().timeIntervalSince1970
        var tick = Tick(time: Int(now * 1000), metrics: sampler.sample(.init(prometheusText: text), at: now))
        tick.guild = try? await self.guildStats(footprint: footprint)
        tick.imports = self.imports.all()
        if let rateLimits = self.rateLimits { tick.rateLimits = try? await rateLimits.snapshot(limit: 20) }
        return (try? JSONEncoder.console.encode(tick)) ?? Data("{}".utf8)
    }

    func guildStats(footprint: (ChainStore.Footprint, Duration)?) async throws -> GuildStats {
        let totals = try await self.store.totals(guild: self.conversation.guild)
        var stats = GuildStats(
            messages: totals["messages", default: 0], states: totals["states", default: 0],
            transitions: totals["transitions", default: 0], count: totals["count", default: 0]
        )
        if let (value, age) = footprint {
            stats.bytes = value.bytes
            stats.bytesSampled = value.sampled
            stats.bytesAge = Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18
        }
        return stats
    }

    /// What one SSE `tick` event carries.
    struct Tick: Encodable {
        var time: Int
        var metrics: MetricsSampler.Sample
        var guild: GuildStats?
        var imports: [ImportJobs.Status] = []
        var rateLimits: SharedRateLimits.Snapshot?
    }

    struct GuildStats: Codable {
        var messages, states, transitions, count: Int
        var bytes: Int?
        var bytesSampled: Bool?
        /// Seconds since the bytes were measured.
        var bytesAge: Double?
    }
}

extension JSONEncoder {
    static let console: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }()
}

// MARK: Listeners and imports

extension WebConsole {
    /// The listeners of the monitor's samples (one per open page).
    final class Monitor: Sendable {
        private struct State {
            var listeners: [Int: AsyncStream<Data>.Continuation] = [:]
            var next = 0
            var waiting: [CheckedContinuation<Void, Never>] = []
            var finished = false
        }

        private let state = Mutex(State())

        var hasListeners: Bool { self.state.withLock { !$0.listeners.isEmpty } }
        var isFinished: Bool { self.state.withLock { $0.finished } }

        /// A stream of samples until the listener goes (its stream is dropped) or the console stops.
        func listen() -> AsyncStream<Data> {
            let (stream, continuation) = AsyncStream.makeStream(of: Data.self, bufferingPolicy: .bufferingNewest(2))
            let waiting: [CheckedContinuation<Void, Never>]? = self.state.withLock { state in
                guard !state.finished else { return nil }
                let id = state.next
                state.next += 1
                state.listeners[id] = continuation
                continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.listeners.removeValue(forKey: id) } }
                defer { state.waiting.removeAll() }
                return state.waiting
            }
            guard let waiting else {
                continuation.finish()
                return stream
            }
            for waiter in waiting { waiter.resume() }
            return stream
        }

        /// Returns when a listener comes, the task is cancelled or the console stops.
        func waitForListener() async {
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let resume = self.state.withLock { state -> Bool in
                        if !state.listeners.isEmpty || state.finished || Task.isCancelled { return true }
                        state.waiting.append(continuation)
                        return false
                    }
                    if resume { continuation.resume() }
                }
            } onCancel: {
                let waiting = self.state.withLock { state in
                    defer { state.waiting.removeAll() }
                    return state.waiting
                }
                for waiter in waiting { waiter.resume() }
            }
        }

        func publish(_ sample: Data) {
            for listener in self.state.withLock({ Array($0.listeners.values) }) { listener.yield(sample) }
        }

        /// Ends every stream (graceful shutdown), so open pages let the server stop.
        func finish() {
            let (listeners, waiting) = self.state.withLock { state in
                state.finished = true
                defer {
                    state.listeners.removeAll()
                    state.waiting.removeAll()
                }
                return (Array(state.listeners.values), state.waiting)
            }
            for listener in listeners { listener.finish() }
            for waiter in waiting { waiter.resume() }
        }
    }
}

/// The imports uploaded from the page: their progress, and the queue ``WebConsole`` runs them from.
final class ImportJobs: Sendable {
    struct Job: Sendable {
        var id: String
        var name: String
        var file: String
    }

    struct Status: Sendable, Encodable {
        var id: String
        var name: String
        /// Waiting for the imports before it.
        var queued: Bool
        var progress: ConsoleImport.Progress
        var fraction: Double
        var rate: Double
        var eta: Double?
    }

    private struct Entry {
        var job: Job
        var started = false
        var progress = ConsoleImport.Progress()
        var finished: Bool { self.progress.phase == .done || self.progress.phase == .failed }
    }

    let queue: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation
    private let jobs = Mutex<[Entry]>([])
    /// Finished imports kept for the page.
    private let keep = 20

    init() { (self.queue, self.continuation) = AsyncStream.makeStream(of: Job.self) }

    /// Queues an uploaded file; false once the console is stopping.
    func add(_ job: Job) -> Bool {
        self.jobs.withLock { $0.append(Entry(job: job)) }
        guard case .enqueued = self.continuation.yield(job) else {
            self.jobs.withLock { $0.removeAll { $0.job.id == job.id } }
            return false
        }
        return true
    }

    func update(_ id: String, _ progress: ConsoleImport.Progress) {
        self.jobs.withLock { jobs in
            guard let index = jobs.firstIndex(where: { $0.job.id == id }) else { return }
            jobs[index].started = true
            jobs[index].progress = progress
            // Only finished imports are forgotten, the oldest first.
            let finished = jobs.indices.filter { jobs[$0].finished }
            if finished.count > self.keep {
                let drop = Set(finished.prefix(finished.count - self.keep))
                jobs = jobs.indices.filter { !drop.contains($0) }.map { jobs[$0] }
            }
        }
    }

    func progress(_ id: String) -> ConsoleImport.Progress? { self.jobs.withLock { $0.first { $0.job.id == id }?.progress } }

    func status(_ id: String) -> Status? { self.all().first { $0.id == id } }

    func all() -> [Status] {
        self.jobs.withLock { $0 }.map { entry in
            Status(
                id: entry.job.id, name: entry.job.name, queued: !entry.started, progress: entry.progress,
                fraction: entry.progress.fraction, rate: entry.progress.rate, eta: entry.progress.eta
            )
        }
    }

    /// Ends the queue; returns the files of the imports that never started.
    func finish() -> [String] {
        self.continuation.finish()
        return self.jobs.withLock { jobs in jobs.filter { !$0.started }.map(\.job.file) }
    }
}
