import ArgumentParser
import NIOCore
import NIOPosix
import Redis

/// Measures the Redis client the way `redis-benchmark` measures the server, so `bench/run` can print the two
/// side by side: pipelined `HINCRBY` throughput (batches of `--pipeline`, one at a time, one connection) and
/// single-command round trips. Prints one line of `key=value` figures.
@main
struct RedisBench: AsyncParsableCommand {
    @Option(help: "Redis URL.") var url = "redis://127.0.0.1:6379"
    @Option(help: "Total commands.") var requests = 1_000_000
    @Option(help: "Commands per pipeline; 1 measures round trips.") var pipeline = 64
    @Option(help: "Concurrent callers sharing the client.") var callers = 1
    @Flag(help: "Run Swift concurrency on NIO's event loops (no thread hop between caller and socket).")
    var eventLoopExecutor = false
    @Option(help: "Event loop threads when --event-loop-executor is on.") var eventLoops = 1

    func run() async throws {
        if self.eventLoopExecutor {
            NIOSingletons.groupLoopCountSuggestion = self.eventLoops
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        var configuration = try RedisConfiguration(url: self.url)
        configuration.connectionsPerNode = 1
        let client = RedisClient(configuration: configuration)
        defer { client.shutdown() }
        let command = RedisCommand("HINCRBY", "bench:client:h", "f", 1)
        let batch = Array(repeating: command, count: self.pipeline)
        try await client.send("PING")

        let clock = ContinuousClock()
        let perCaller = self.requests / self.callers / self.pipeline
        let started = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for _ in 0..<self.callers {
                group.addTask {
                    var latencies: [Duration] = []
                    latencies.reserveCapacity(perCaller)
                    for _ in 0..<perCaller {
                        let start = clock.now
                        if batch.count == 1 {
                            try await client.send(command)
                        } else {
                            for result in await client.pipeline(batch) { _ = try result.get() }
                        }
                        latencies.append(clock.now - start)
                    }
                    return latencies
                }
            }
            var all: [Duration] = []
            for try await part in group { all += part }
            return all
        }
        let elapsed = clock.now - started
        let total = perCaller * self.callers * self.pipeline
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let sorted = latencies.sorted()
        func microseconds(_ quantile: Double) -> Double {
            let duration = sorted[min(sorted.count - 1, Int(Double(sorted.count) * quantile))]
            return Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
        }
        print(
            "ops_per_sec=\(Int(Double(total) / seconds)) p50_us=\(microseconds(0.5)) p99_us=\(microseconds(0.99))"
        )
        try await client.send("DEL", "bench:client:h")
    }
}
