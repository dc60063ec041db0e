import Foundation
import Synchronization
@testable import Redis
import Testing

@Suite("Shutdown and background work", .enabled(if: TestRedis.isConfigured))
struct ShutdownTests {
    /// Connected clients of a private server, less the one asking (which must use one connection).
    static func connections(_ observer: RedisClient) async throws -> Int {
        let info = try await observer.send("INFO", "clients").string ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("connected_clients:") }
        return (line.flatMap { Int($0.dropFirst("connected_clients:".count)) } ?? 0) - 1
    }

    /// Clients of a private server blocked in a command.
    static func blockedClients(_ observer: RedisClient) async throws -> Int {
        let info = try await observer.send("INFO", "clients").string ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("blocked_clients:") }
        return line.flatMap { Int($0.dropFirst("blocked_clients:".count)) } ?? 0
    }

    @Test("shutdown ends run(), closes every connection (a blocking read in flight included), and refuses later work with a clear error before connecting")
    func standalone() async throws {
        let server = try PrivateRedisServer()
        // One connection of its own, so that the server's count less one is the client's.
        var single = try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)")
        single.connectionsPerNode = 1
        let observer = RedisClient(configuration: single, logger: TestRedis.logger)
        defer { observer.shutdown() }
        let client = RedisClient(configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)"), logger: TestRedis.logger)
        let background = Task { await client.run() }
        #expect(try await client.send("PING") == .simpleString("PONG"))
        let blocked = Task { () -> RedisError? in
            do throws(RedisError) {
                _ = try await client.blocking(RedisCommand("BLPOP", "never-filled", 30), block: .seconds(30))
                return nil
            } catch {
                return error
            }
        }
        // The read is in flight once the server has the client blocked.
        while try await Self.blockedClients(observer) < 1 { try await Task.sleep(for: .milliseconds(20)) }
        client.shutdown()
        await background.value
        let failure = await blocked.value
        #expect(failure?.code == .connectionClosed, "the blocking read in flight fails at once: \(String(describing: failure))")
        while try await Self.connections(observer) > 0 { try await Task.sleep(for: .milliseconds(20)) }

        // Later work is refused, and opens nothing.
        await #expect(throws: RedisError.self) { try await client.send("PING") }
        do {
            try await client.send("PING")
        } catch {
            #expect(error.code == .shutDown)
            #expect(error.message.contains("shut down"))
        }
        do {
            _ = try await client.blocking(RedisCommand("BLPOP", "x", 1), block: .seconds(1))
            Issue.record("a blocking read after shutdown ran")
        } catch {
            #expect(error.code == .shutDown)
        }
        for result in await client.pipeline([RedisCommand("PING"), RedisCommand("PING")]) {
            guard case .failure(let error) = result else {
                Issue.record("a pipelined command after shutdown ran")
                continue
            }
            #expect(error.code == .shutDown)
        }
        do {
            _ = try await client.transaction(watch: ["k"], read: [], decide: { _ in }, commands: [RedisCommand("SET", "k", "v")])
            Issue.record("a transaction after shutdown ran")
        } catch {
            #expect(error.code == .shutDown)
        }
        #expect(try await Self.connections(observer) == 0)
        #expect(client.isShutDown)
    }

    @Test("a cluster client opens no pool after shutdown, for any node; run() returns")
    func cluster() async throws {
        let client = try TestRedis.cluster()
        let background = Task { await client.run() }
        let masters = try await client.masters()
        for master in masters { _ = try await client.send(RedisCommand("PING"), to: master) }
        for index in 0..<30 { try await client.send("SET", .string("shutdown-test:{\(index)}"), "v") }
        #expect(client.openPools >= masters.count)
        client.shutdown()
        await background.value
        #expect(client.openPools == 0)
        for index in 0..<30 {
            do {
                _ = try await client.send("GET", .string("shutdown-test:{\(index)}"))
                Issue.record("a command after shutdown ran")
            } catch {
                #expect(error.code == .shutDown)
            }
        }
        for master in masters {
            await #expect(throws: RedisError.self) { try await client.send(RedisCommand("PING"), to: master) }
        }
        await #expect(throws: RedisError.self) { try await client.masters() }
        #expect(client.openPools == 0, "no late command opened a pool")
        let cleanup = try TestRedis.cluster()
        defer { cleanup.shutdown() }
        for index in 0..<30 { try await cleanup.send("DEL", .string("shutdown-test:{\(index)}")) }
    }

    @Test("one attempt at a time: concurrent callers share it; a cancelled waiter stops, the others still get the value")
    func singleFlight() async throws {
        let flight = SingleFlight<Int>()
        let attempts = AttemptCounter()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await flight.run { () throws(RedisError) -> Int in
                        attempts.increment()
                        try? await Task.sleep(for: .milliseconds(300))
                        return 42
                    }
                }
            }
            var all: [Int] = []
            for try await value in group { all.append(value) }
            return all
        }
        #expect(results == Array(repeating: 42, count: 20))
        #expect(attempts.value < 20, "callers that came while an attempt ran shared it (\(attempts.value) attempts)")

        // A waiter cancelled while the attempt runs stops with .cancelled; the leader's attempt goes on.
        let leader = Task {
            try await flight.run { () throws(RedisError) -> Int in
                try? await Task.sleep(for: .milliseconds(500))
                return 7
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        let waiter = Task { () -> RedisError? in
            do throws(RedisError) {
                _ = try await flight.run { () throws(RedisError) -> Int in 0 }
                return nil
            } catch {
                return error
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        #expect(await waiter.value?.code == .cancelled)
        #expect(try await leader.value == 7)
    }
}

/// A thread-safe count for the tests.
final class AttemptCounter: Sendable {
    private let count = Mutex(0)
    func increment() { self.count.withLock { $0 += 1 } }
    var value: Int { self.count.withLock { $0 } }
}
