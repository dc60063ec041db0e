import ArgumentParser
import Foundation
import Logging
import MarkovChains
import MarkovCore
import NIOCore
import NIOPosix
import Redis

/// Measures the chain store: training throughput and memory, generation throughput and latency (with the
/// linear-scan and client-side-walk ablations), and freshness. Prints `key=value` lines for `bench/run`.
@main
struct ChainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(subcommands: [TrainBench.self, GenerateBench.self, FreshnessBench.self])
}

struct Common: ParsableArguments {
    @Option(help: "Redis URL.") var url = "redis://127.0.0.1:6379"
    @Option(help: "Tokens per state.") var stateSize = 2
    @Option(help: "Event log partitions.") var partitions = 1
    @Option(help: "Redis Cluster seeds (host:port,…); overrides --url.") var clusterNodes: String?

    func make() throws -> (RedisClient, ChainStore, EventLog) {
        // As the `markov` executable runs: Swift concurrency on NIO's event loops, one per core.
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        var configuration = try self.clusterNodes.map { try RedisConfiguration(clusterNodes: $0) }
            ?? RedisConfiguration(url: self.url)
        configuration.commandTimeout = .seconds(120) // a saturated Redis answers late, and that is what is measured
        let redis = RedisClient(configuration: configuration, logger: logger)
        return (redis, ChainStore(redis: redis, stateSize: self.stateSize), EventLog(redis: redis, partitions: self.partitions))
    }

    /// Redis's CPU seconds so far (user + system, every master).
    static func redisCPU(_ redis: RedisClient) async throws -> Double {
        var total = 0.0
        for master in try await redis.masters() {
            let info = try await redis.send(RedisCommand("INFO", "cpu"), to: master).string ?? ""
            for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("used_cpu_user:") || line.hasPrefix("used_cpu_sys:") {
                total += Double(line.split(separator: ":")[1]) ?? 0
            }
        }
        return total
    }

    /// Starts counting commands slower than 5 ms (every master).
    static func resetSlowlog(_ redis: RedisClient) async throws {
        for master in try await redis.masters() {
            try await redis.send(RedisCommand("CONFIG", "SET", "slowlog-log-slower-than", "5000"), to: master)
            try await redis.send(RedisCommand("CONFIG", "SET", "slowlog-max-len", "10000"), to: master)
            try await redis.send(RedisCommand("SLOWLOG", "RESET"), to: master)
        }
    }

    /// Commands slower than 5 ms since ``resetSlowlog(_:)``.
    static func slowCommands(_ redis: RedisClient) async throws -> Int {
        var count = 0
        for master in try await redis.masters() { count += try await redis.send(RedisCommand("SLOWLOG", "LEN"), to: master).int ?? 0 }
        return count
    }

    /// This process's CPU seconds so far.
    static func processCPU() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }

    /// Removes every key of a guild on the bench's own Redis (benchmarks only: the system itself deletes through
    /// the partition owner).
    static func wipe(_ guild: Snowflake, redis: RedisClient) async throws {
        for master in try await redis.masters() {
            var cursor = "0"
            repeat {
                let reply = try await redis.send(RedisCommand("SCAN", .string(cursor), "MATCH", .string("{g:\(guild)}*"), "COUNT", 1000), to: master)
                cursor = reply.array?[0].string ?? "0"
                for key in (reply.array?[1].array ?? []).compactMap(\.string) { try await redis.send(RedisCommand("UNLINK", .string(key))) }
            } while cursor != "0"
        }
    }

    static func trainer(_ store: ChainStore, _ log: EventLog, batch: Int = 512) -> Trainer {
        var configuration = Trainer.Configuration(consumer: "bench-\(UUID().uuidString)")
        configuration.partitions = log.keys.partitions
        configuration.block = .milliseconds(50)
        configuration.batchSize = batch
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        return Trainer(store: store, log: log, configuration: configuration, logger: logger)
    }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func quantile(_ sorted: [Double], _ q: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
}

/// Imports a corpus into a fresh guild and times the trainer applying it.
struct TrainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train")
    @OptionGroup var common: Common
    @Option(help: "One message per line.") var corpus: String
    @Option(help: "The guild to fill (deleted first).") var guild = "900000000000000001"
    @Option(help: "Entries per trainer batch.") var batch = 512
    @Option(help: "Trainers running at once (in this process; each is a consumer like a separate process).")
    var trainers = 1
    @Option(help: "Spread the corpus over this many guilds (consecutive ids from --guild).") var guilds = 1
    @Option(help: "Training filters: `default` (links and invites stripped) or `none`, with the training-filters flag on; unset: as the flag stands (off: nothing stripped, the filters not read).")
    var filters: String?

    func run() async throws {
        let (redis, store, log) = try self.common.make()
        defer { redis.shutdown() }
        let base = UInt64(self.guild)!
        let guildIDs = (0..<UInt64(self.guilds)).map { Snowflake(String(base + $0))! }
        let guild = guildIDs[0]
        try await store.prepare()
        for id in guildIDs { try await Common.wipe(id, redis: redis) }
        if let filters = self.filters {
            guard filters == "default" || filters == "none" else { throw ValidationError("--filters is default or none") }
            try await FeatureFlags.set(.trainingFilters, to: .all, redis: redis)
            for id in guildIDs where filters == "none" { try await store.setFilters([], guild: id) }
        }
        try await log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        let lines = try String(contentsOfFile: self.corpus, encoding: .utf8).split(separator: "\n").map(String.init)
        let events = lines.enumerated().map { index, text in
            ChainEvent(kind: .create, source: .importer, guildID: guildIDs[index % guildIDs.count], messageID: "b\(index)", content: text)
        }
        let clock = ContinuousClock()
        let appendStart = clock.now
        for chunk in stride(from: 0, to: events.count, by: 2000) {
            try await log.append(Array(events[chunk..<min(chunk + 2000, events.count)]), lane: .bulk)
        }
        let appendTime = clock.now - appendStart
        // Redis's CPU and slow commands over the apply phase (every master), and this process's CPU (the trainers).
        let redisBefore = try await Common.redisCPU(redis)
        try await Common.resetSlowlog(redis)
        let cpuBefore = Common.processCPU()
        let start = clock.now
        var applyTime = Duration.zero
        var redisAfter = 0.0
        var cpuAfter = 0.0
        var slow = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            let trainers = (0..<self.trainers).map { _ in Common.trainer(store, log, batch: self.batch) }
            for trainer in trainers { group.addTask { try await trainer.run() } }
            while try await log.backlog(group: "trainers", partitions: 0..<log.keys.partitions, lanes: EventLog.Lane.allCases) > 0 {
                try await Task.sleep(for: .milliseconds(20))
            }
            applyTime = clock.now - start
            redisAfter = try await Common.redisCPU(redis)
            cpuAfter = Common.processCPU()
            slow = try await Common.slowCommands(redis)
            // The owners compact big states once idle; memory is measured after that.
            while trainers.contains(where: { $0.compactionsPending > 0 }) { try await Task.sleep(for: .milliseconds(20)) }
            group.cancelAll()
        }
        // The flag as the other figures expect it: off.
        if self.filters != nil { try await FeatureFlags.set(.trainingFilters, to: .off, redis: redis) }
        var totals: [String: Int] = [:]
        for id in guildIDs {
            for (key, value) in try await store.totals(guild: id) { totals[key, default: 0] += value }
        }
        // Memory by key: the chain (everything but message records) and the message records.
        var chainBytes = 0
        var messageBytes = 0
        for master in try await redis.masters() {
            var cursor = "0"
            repeat {
                let reply = try await redis.send(RedisCommand("SCAN", .string(cursor), "MATCH", .string("{g:\(guild)}*"), "COUNT", 1000), to: master)
                cursor = reply.array?[0].string ?? "0"
                for key in (reply.array?[1].array ?? []).compactMap(\.string) {
                    let bytes = try await redis.send(RedisCommand("MEMORY", "USAGE", .string(key), "SAMPLES", 0)).int ?? 0
                    if key.hasSuffix("}:m") || key.hasSuffix("}:h") { messageBytes += bytes } else { chainBytes += bytes }
                }
            } while cursor != "0"
        }
        let transitions = totals["count", default: 0]
        print(
            "messages=\(totals["messages", default: 0]) transitions_applied=\(transitions) "
                + "distinct_transitions=\(totals["transitions", default: 0]) states=\(totals["states", default: 0]) "
                + "apply_seconds=\(seconds(applyTime)) transitions_per_sec=\(Int(Double(transitions) / seconds(applyTime))) "
                + "messages_per_sec=\(Int(Double(lines.count) / seconds(applyTime))) "
                + "append_per_sec=\(Int(Double(lines.count) / seconds(appendTime))) "
                + String(format: "redis_cpu_us_per_transition=%.3f trainer_cpu_us_per_transition=%.3f slow_commands=%d ",
                         (redisAfter - redisBefore) * 1e6 / Double(max(1, transitions)), (cpuAfter - cpuBefore) * 1e6 / Double(max(1, transitions)), slow)
                + (self.guilds == 1
                    ? "chain_bytes=\(chainBytes) bytes_per_transition=\(chainBytes / max(1, totals["transitions", default: 1])) "
                        + "message_bytes=\(messageBytes) bytes_per_message=\(messageBytes / max(1, totals["messages", default: 1]))"
                    : "guilds=\(self.guilds) trainers=\(self.trainers)")
        )
    }
}

/// Generates sentences with concurrent callers.
struct GenerateBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate")
    @OptionGroup var common: Common
    @Option var guild = "900000000000000001"
    @Option var callers = 8
    @Option var count = 5000
    @Flag(help: "Ablation: sample big states by linear scan.") var linear = false
    @Flag(help: "Ablation: walk the chain from the client, one call per word.") var clientWalk = false
    @Option(help: "Give the guild a blocklist of this many entries first (a tenth wildcards `*x*`, none in the corpus: what the matcher costs), removed at the end.")
    var blocklist = 0
    @Option(help: "Also block these words (repeatable; words of the corpus: what rejections cost).") var block: [String] = []

    func run() async throws {
        let (redis, store, _) = try self.common.make()
        defer { redis.shutdown() }
        let guild = Snowflake(self.guild)!
        try await store.prepare()
        let entries = try (0..<self.blocklist).map { try BlockEntry($0 % 10 == 0 ? "*zqx\($0)*" : "zqxblocked\($0)") } + self.block.map { try BlockEntry($0) }
        try await store.setBlocked(entries, blocked: true, guild: guild)

        let clock = ContinuousClock()
        let perCaller = self.count / self.callers
        let start = clock.now
        let results = try await withThrowingTaskGroup(of: ([Double], Int).self) { group in
            for caller in 0..<self.callers {
                group.addTask {
                    var latencies: [Double] = []
                    var made = 0
                    var generator = SystemRandomNumberGenerator()
                    for index in 0..<perCaller {
                        let begin = clock.now
                        if self.clientWalk {
                            if try await Self.walk(store: store, guild: guild, generator: &generator) { made += 1 }
                        } else {
                            var options = ChainStore.GenerationOptions()
                            options.rngSeed = UInt64(caller * perCaller + index)
                            options.maxTries = 1
                            options.allowCopies = true
                            options.linearScan = self.linear
                            if try await store.generate(guild: guild, options: options).sentence != nil { made += 1 }
                        }
                        latencies.append(seconds(clock.now - begin) * 1e6)
                    }
                    return (latencies, made)
                }
            }
            var all: [Double] = []
            var made = 0
            for try await (latencies, count) in group {
                all += latencies
                made += count
            }
            return (all.sorted(), made)
        }
        let elapsed = seconds(clock.now - start)
        print(
            "calls_per_sec=\(Int(Double(results.0.count) / elapsed)) sentences_per_sec=\(Int(Double(results.1) / elapsed)) "
                + "p50_us=\(Int(quantile(results.0, 0.5))) p99_us=\(Int(quantile(results.0, 0.99)))"
        )
        try await store.setBlocked(entries, blocked: false, guild: guild)
    }

    /// The client-side walk: one `markov_state` call per word, sampled here.
    static func walk(store: ChainStore, guild: Snowflake, generator: inout SystemRandomNumberGenerator) async throws -> Bool {
        var state = Array(repeating: "", count: store.stateSize)
        for _ in 0..<60 {
            let table = try await store.state(state, guild: guild)
            let total = table.successors.reduce(0) { $0 + $1.count }
            guard total > 0 else { return false }
            var r = Int.random(in: 0..<total, using: &generator)
            var next = ""
            for (token, count) in table.successors {
                r -= count
                if r < 0 { next = token; break }
            }
            if next.isEmpty { return true }
            state.removeFirst()
            state.append(next)
        }
        return false
    }
}

/// Feeds messages at a fixed rate while a trainer runs, and times XADD → sampleable for marked messages.
struct FreshnessBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fresh")
    @OptionGroup var common: Common
    @Option(help: "Messages per second.") var rate = 1000
    @Option var seconds = 10
    @Option var guild = "900000000000000002"
    @Flag(help: "Run no trainer here: the partition's owner elsewhere (an import's, a running trainer) applies.")
    var noTrainer = false

    func run() async throws {
        let (redis, store, log) = try self.common.make()
        defer { redis.shutdown() }
        let guild = Snowflake(self.guild)!
        try await store.prepare()
        try await Common.wipe(guild, redis: redis)
        try await log.ensureGroup("trainers")
        let trainer = self.noTrainer ? nil : Common.trainer(store, log)
        let clock = ContinuousClock()
        let total = self.rate * self.seconds
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            if let trainer { group.addTask { try await trainer.run(); return [] } }
            group.addTask {
                var generator = SystemRandomNumberGenerator()
                var probes: [Task<Double, any Error>] = []
                let start = clock.now
                for index in 0..<total {
                    let due = start + .nanoseconds(Int64(index) * 1_000_000_000 / Int64(self.rate))
                    if clock.now < due { try await Task.sleep(until: due, clock: clock) }
                    let words = (0..<Int.random(in: 3...12, using: &generator)).map { _ in "w\(Int.random(in: 0..<2000, using: &generator))" }
                    let marked = index % 20 == 0
                    let text = (marked ? ["fresh\(index)"] : []) + words
                    let sent = clock.now
                    try await log.append([ChainEvent(kind: .create, source: .importer, guildID: guild, messageID: "f\(index)", content: text.joined(separator: " "))])
                    if marked {
                        probes.append(Task {
                            while true {
                                if try await store.state(["", "fresh\(index)"], guild: guild).kind != "unknown" {
                                    return ChainBenchSeconds.micro(clock.now - sent)
                                }
                                try await Task.sleep(for: .milliseconds(1))
                            }
                        })
                    }
                }
                var latencies: [Double] = []
                for probe in probes { latencies.append(try await probe.value) }
                return latencies
            }
            var latencies: [Double] = []
            for try await part in group where !part.isEmpty {
                latencies = part
                group.cancelAll()
                break
            }
            return latencies.sorted()
        }
        print("rate=\(self.rate) probes=\(latencies.count) fresh_p50_ms=\(quantile(latencies, 0.5) / 1000) fresh_p99_ms=\(quantile(latencies, 0.99) / 1000)")
    }
}

enum ChainBenchSeconds {
    static func micro(_ duration: Duration) -> Double { seconds(duration) * 1e6 }
}
