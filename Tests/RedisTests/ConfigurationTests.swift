import Redis
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    @Test("redis:// URLs")
    func redisURLs() throws {
        let plain = try RedisConfiguration(url: "redis://localhost")
        #expect(plain.endpoints == [.tcp(host: "localhost", port: 6379)])
        #expect(plain.database == 0 && plain.password == nil && !plain.isCluster)

        let full = try RedisConfiguration(url: "redis://:s%40cret@10.0.0.5:6380/3")
        #expect(full.endpoints == [.tcp(host: "10.0.0.5", port: 6380)])
        #expect(full.password == "s@cret" && full.username == nil && full.database == 3)

        let user = try RedisConfiguration(url: "redis://bot:pw@[::1]:7000/")
        #expect(user.endpoints == [.tcp(host: "::1", port: 7000)])
        #expect(user.username == "bot" && user.password == "pw")

        let v6 = try RedisConfiguration(url: "redis://[::1]")
        #expect(v6.endpoints == [.tcp(host: "::1", port: 6379)])
    }

    @Test("unix:// URLs")
    func unixURLs() throws {
        let socket = try RedisConfiguration(url: "unix:///run/redis.sock?db=2")
        #expect(socket.endpoints == [.unix(path: "/run/redis.sock")])
        #expect(socket.database == 2)
    }

    @Test("bad URLs fail with a clear error that never shows the password", arguments: [
        "http://x", "redis://", "redis://host:notaport", "redis://host:99999", "redis://:hunter2@host/abc",
        "unix://relative.sock",
    ])
    func badURLs(url: String) {
        #expect {
            _ = try RedisConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .invalidConfiguration && !"\(error)".contains("hunter2")
        }
    }

    @Test("cluster seeds")
    func clusterSeeds() throws {
        let cluster = try RedisConfiguration(clusterNodes: "127.0.0.1:7000, redis-1:7001,[::1]:7002")
        #expect(cluster.isCluster)
        #expect(cluster.endpoints == [
            .tcp(host: "127.0.0.1", port: 7000), .tcp(host: "redis-1", port: 7001), .tcp(host: "::1", port: 7002),
        ])
        #expect(throws: RedisError.self) { try RedisConfiguration(clusterNodes: "") }
        #expect(throws: RedisError.self) { try RedisConfiguration(clusterNodes: "a:1,b") }
    }

    @Test("the description hides the password")
    func description() throws {
        let configuration = try RedisConfiguration(url: "redis://:hunter2@localhost:6379")
        #expect(!configuration.description.contains("hunter2"))
    }

    @Test("backoff is capped and jittered")
    func backoff() {
        let backoff = Backoff(initial: .milliseconds(10), maximum: .seconds(1))
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(10))
        #expect(backoff.ceiling(attempt: 3) == .milliseconds(80))
        #expect(backoff.ceiling(attempt: 100) == .seconds(1))
        var delays = Set<Duration>()
        for attempt in 0..<50 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay >= .zero && delay <= backoff.ceiling(attempt: attempt))
            delays.insert(delay)
        }
        #expect(delays.count > 10)
    }
}
