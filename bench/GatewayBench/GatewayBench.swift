import ArgumentParser
import FakeDiscord
import Foundation
import Logging
import NIOCore
import NIOPosix
import Redis

/// Gateway figures: events per second one `markov gateway` process pushes to Redis from a flooding fake Discord
/// (with its CPU and RSS), and the time from a forced disconnect until an event sent after it is in the stream.
///
/// The fake runs in this process; the gateway is the real executable, in its own process, so its CPU and memory
/// are its own. Prints one `key=value` line per figure.
@main
struct GatewayBench: AsyncParsableCommand {
    @Option(help: "Redis URL (a scratch database: it is flushed).") var url = "redis://127.0.0.1:16400"
    @Option(help: "The markov executable.") var markov = ".build/release/markov"
    @Option(help: "Events to flood.") var events = 200_000
    @Option(help: "Shards held by the one gateway process.") var shards = 4
    @Option(help: "Forced disconnects to time.") var resumes = 100
    @Flag(help: "Ask for zlib-stream compression.") var compress = false
    @Option(help: "gateway: events/s and resumes; replies: trigger-to-REST latency through gateway, stream and responder.")
    var mode = "gateway"
    @Option(help: "Triggers per second (replies mode).") var rate = 1000
    @Option(help: "Triggers to send (replies mode).") var triggers = 5000

    func run() async throws {
        if self.mode == "replies" {
            try await self.replies()
            return
        }
        var logger = Logger(label: "gateway-bench")
        logger.logLevel = .critical
        let redis = RedisClient(configuration: try RedisConfiguration(url: self.url), logger: logger)
        defer { redis.shutdown() }
        try await redis.send("FLUSHDB")
        var configuration = FakeDiscord.Configuration()
        configuration.shards = self.shards
        configuration.identifyInterval = .milliseconds(100)
        let fake = FakeDiscord(configuration: configuration, logger: logger)
        try await fake.start()

        let process = try self.spawn(
            ["gateway", "--shard-count", "\(self.shards)", "--identify-interval-ms", "100"] + (self.compress ? ["--compress"] : []),
            fake: fake
        )
        defer { if process.isRunning { kill(process.processIdentifier, SIGTERM); process.waitUntilExit() } }
        try await fake.waitForShards(0..<self.shards)
        let rssIdle = Self.rss(process.processIdentifier)

        // Flood: payloads built first, so the fake spends its time sending.
        let guilds = (0..<self.shards).map { shard -> UInt64 in
            var guild = UInt64(1_000 + shard) << 22
            while Int((guild >> 22) % UInt64(self.shards)) != shard { guild += 1 << 22 }
            return guild
        }
        let words = ["hello", "there", "general", "kenobi", "what", "a", "day", "to", "be", "alive", "lol", "ok"]
        var payloads: [(Int, String)] = []
        payloads.reserveCapacity(self.events)
        for index in 0..<self.events {
            let shard = index % self.shards
            let text = (0..<(3 + index % 12)).map { words[($0 * 7 + index) % words.count] }.joined(separator: " ")
            payloads.append((shard, FakeDiscord.messageJSON(
                id: 1_300_000_000_000_000_000 + UInt64(index), channel: 7, guild: guilds[shard], author: 9, content: text
            )))
        }
        let cpuBefore = Self.cpuSeconds(process.processIdentifier)
        let start = ContinuousClock.now
        for (shard, json) in payloads { try fake.dispatch(shard: shard, event: "MESSAGE_CREATE", json: json) }
        while try await Self.streamLength(redis) < self.events {
            try await Task.sleep(for: .milliseconds(2))
        }
        let elapsed = ContinuousClock.now - start
        let cpu = Self.cpuSeconds(process.processIdentifier) - cpuBefore
        let rssPeak = Self.peakRSS(process.processIdentifier)
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(String(format: "gateway events=%d seconds=%.3f events_per_sec=%.0f cpu_cores=%.2f cpu_us_per_event=%.2f rss_idle_mb=%.1f rss_peak_mb=%.1f rss_peak_per_shard_mb=%.1f shards=%d",
                     self.events, seconds, Double(self.events) / seconds, cpu / seconds, cpu * 1e6 / Double(self.events),
                     rssIdle, rssPeak, rssPeak / Double(self.shards), self.shards))

        // Resume latency: drop a shard's TCP connection, send one event at once, time until it is in the stream.
        var latencies: [Double] = []
        var count = try await Self.streamLength(redis)
        for trial in 0..<self.resumes {
            let shard = trial % self.shards
            let resumesBefore = fake.resumeCount
            let begin = ContinuousClock.now
            fake.dropConnection(shard: shard)
            try fake.dispatch(
                shard: shard, event: "MESSAGE_CREATE",
                json: FakeDiscord.messageJSON(id: 1_400_000_000_000_000_000 + UInt64(trial), channel: 7, guild: guilds[shard],
                                              author: 9, content: "marker \(trial)")
            )
            while try await Self.streamLength(redis) <= count { try await Task.sleep(for: .microseconds(200)) }
            let took = ContinuousClock.now - begin
            latencies.append(Double(took.components.seconds) * 1e3 + Double(took.components.attoseconds) / 1e15)
            count += 1
            while fake.resumeCount <= resumesBefore { try await Task.sleep(for: .milliseconds(1)) }
            try await fake.waitForShards(0..<self.shards)
            try await Task.sleep(for: .milliseconds(20))
        }
        latencies.sort()
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        print(String(format: "resume trials=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f", latencies.count, percentile(0.5),
                     percentile(0.99), latencies.last ?? 0))
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        await fake.stop()
    }

    /// Starts a `markov` role in its own process.
    func spawn(_ arguments: [String], fake: FakeDiscord, extra: [String: String] = [:]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: self.markov)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["REDIS_URL"] = self.url
        environment["DISCORD_TOKEN"] = fake.configuration.token
        environment["DISCORD_API_URL"] = fake.apiURL
        environment["MARKOV_PARTITIONS"] = "16"
        environment["LOG_LEVEL"] = "error"
        environment["MARKOV_HTTP_PORT"] = "0"
        environment.merge(extra) { $1 }
        process.environment = environment
        try process.run()
        return process
    }

    /// Reply latency: `!mark` triggers at a steady rate over many channels, from the fake's dispatch to the
    /// fake receiving the reply's REST request (one clock: the fake's), through a gateway, the stream and a
    /// responder process (with a trainer having learnt the guild first).
    func replies() async throws {
        var logger = Logger(label: "gateway-bench")
        logger.logLevel = .critical
        let redis = RedisClient(configuration: try RedisConfiguration(url: self.url), logger: logger)
        defer { redis.shutdown() }
        try await redis.send("FLUSHDB")
        var configuration = FakeDiscord.Configuration()
        configuration.rest.globalLimit = 1_000_000
        configuration.rest.messageBucketLimit = 1_000_000
        let fake = FakeDiscord(configuration: configuration, logger: logger)
        try await fake.start()
        let guild: UInt64 = 1_000 << 22
        let channels = 200
        for channel in 0..<channels {
            try await redis.send("SADD", .string("{g:\(guild)}:listen"), .string(String(10_000 + channel)))
        }
        let gateway = try self.spawn(["gateway", "--shard-count", "1"], fake: fake)
        let trainer = try self.spawn(["trainer"], fake: fake)
        let responder = try self.spawn(["responder"], fake: fake, extra: ["DISCORD_GLOBAL_LIMIT": "1000000"])
        defer {
            for process in [gateway, trainer, responder] where process.isRunning {
                kill(process.processIdentifier, SIGTERM)
                process.waitUntilExit()
            }
        }
        try await fake.waitForShards([0])
        // Recent snowflakes: older triggers are not answered.
        let base = (UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000) << 22
        // Something to say: 5,000 messages learnt first.
        let words = ["hello", "there", "general", "kenobi", "what", "a", "day", "to", "be", "alive", "lol", "ok"]
        for index in 0..<5_000 {
            let text = (0..<(3 + index % 9)).map { words[($0 * 5 + index) % words.count] }.joined(separator: " ")
            try fake.dispatch(shard: 0, event: "MESSAGE_CREATE", json: FakeDiscord.messageJSON(
                id: 1_600_000_000_000_000_000 + UInt64(index), channel: UInt64(10_000 + index % channels), guild: guild,
                author: 9, content: text))
        }
        while try await redis.send("HGET", .string("{g:\(guild)}:meta"), "messages").string.flatMap({ Int($0) }) ?? 0 < 5_000 {
            try await Task.sleep(for: .milliseconds(50))
        }
        // Triggers at a steady rate.
        var sent: [String: ContinuousClock.Instant] = [:]
        let start = ContinuousClock.now
        let interval = Duration.seconds(1) / self.rate
        for index in 0..<self.triggers {
            let due = start + interval * index
            if due > .now { try await Task.sleep(until: due, clock: .continuous) }
            let id = base + UInt64(index)
            let json = FakeDiscord.messageJSON(id: id, channel: UInt64(10_000 + index % channels), guild: guild, author: 9,
                                               content: "!mark hello")
            sent[String(id)] = .now
            try fake.dispatch(shard: 0, event: "MESSAGE_CREATE", json: json)
        }
        let sendSeconds = Double((ContinuousClock.now - start).components.seconds)
            + Double((ContinuousClock.now - start).components.attoseconds) / 1e18
        let deadline = ContinuousClock.now + .seconds(120)
        while fake.rest.messageCount < self.triggers, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        var latencies: [Double] = []
        for request in fake.rest.requests where request.method == "POST" && request.path.hasSuffix("/messages") {
            guard let nonce = request.json?["nonce"] as? String, let at = sent[nonce] else { continue }
            let took = request.at - at
            latencies.append(Double(took.components.seconds) * 1e3 + Double(took.components.attoseconds) / 1e15)
        }
        let elapsed = ContinuousClock.now - start
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        let replied = fake.rest.messageCount
        print(String(format: "replies triggers=%d replied=%d offered_per_sec=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f replies_per_sec=%.0f",
                     self.triggers, replied, Double(self.triggers) / sendSeconds, percentile(0.5), percentile(0.99),
                     latencies.last ?? 0,
                     Double(replied) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)))
        await fake.stop()
    }

    static func streamLength(_ redis: RedisClient) async throws -> Int {
        let results = await redis.pipeline((0..<16).map { RedisCommand("XLEN", .string("events:{\($0)}")) })
        return try results.reduce(0) { $0 + (try $1.get().int ?? 0) }
    }

    /// User plus system CPU seconds of a process.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
        let utime = Double(fields[11]) ?? 0
        let stime = Double(fields[12]) ?? 0
        return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func rss(_ pid: Int32) -> Double { Self.status(pid, "VmRSS:") }
    static func peakRSS(_ pid: Int32) -> Double { Self.status(pid, "VmHWM:") }

    /// A `kB` line of /proc/PID/status, in MiB.
    static func status(_ pid: Int32, _ key: String) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            let value = line.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
            return value / 1024
        }
        return 0
    }
}
