import Foundation
import Redis
import Testing

@Suite("Standalone Redis", .enabled(if: TestRedis.isConfigured))
struct StandaloneTests {
    @Test("binary values and keys with braces, NUL and invalid UTF-8 round-trip unchanged")
    func binarySafety() async throws {
        let client = try TestRedis.standalone()
        defer { client.shutdown() }
        let key: [UInt8] = Array(TestRedis.uniqueKey("bin").utf8) + [0x7B, 0x7D, 0x00, 0xFF, 0x0A, 0x20]
        let value: [UInt8] = [0x00, 0x01, 0xFF, 0xFE, 0x0D, 0x0A, 0x7B] + Array("ünïcødé 🎉".utf8) + [0xC3]
        try await client.send("SET", .bytes(key), .bytes(value))
        let reply = try await client.send("GET", .bytes(key))
        #expect(reply == .bulkString(value))
        #expect(try await client.send("STRLEN", .bytes(key)) == .integer(Int64(value.count)))
        let empty = TestRedis.uniqueKey("empty")
        try await client.send("SET", .string(empty), .bytes([]))
        #expect(try await client.send("GET", .string(empty)) == .bulkString([]))
        #expect(try await client.send("GET", .string(TestRedis.uniqueKey("missing"))) == .null)
        try await client.send("DEL", .bytes(key), .string(empty))
    }

    @Test("a pipeline of 10,000 commands answers every command, in order")
    func bigPipeline() async throws {
        let client = try TestRedis.standalone()
        defer { client.shutdown() }
        let key = TestRedis.uniqueKey("pipe")
        let commands = (0..<10_000).map { index in
            RedisCommand("HINCRBY", .string(key), .string("f\(index % 100)"), .integer(index))
        }
        let results = await client.pipeline(commands)
        #expect(results.count == 10_000)
        // Field f(i % 100) accumulates i; each reply is the running sum, so order is checked too.
        var sums = [Int](repeating: 0, count: 100)
        for (index, result) in results.enumerated() {
            sums[index % 100] += index
            #expect(try result.get() == .integer(Int64(sums[index % 100])))
        }
        let all = try await client.send("HGETALL", .string(key))
        #expect(all.array?.count == 200)
        try await client.send("DEL", .string(key))
    }

    @Test("concurrent callers on one client share connections and lose nothing")
    func concurrentCallers() async throws {
        let client = try TestRedis.standalone { $0.connectionsPerNode = 1 }
        defer { client.shutdown() }
        let key = TestRedis.uniqueKey("incr")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    for _ in 0..<100 { try await client.send("INCR", .string(key)) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await client.send("GET", .string(key)).int == 5000)
        try await client.send("DEL", .string(key))
    }

    @Test("error replies keep their prefix; a pipeline's other commands still run")
    func errors() async throws {
        let client = try TestRedis.standalone()
        defer { client.shutdown() }
        let stream = TestRedis.uniqueKey("stream")
        try await client.send("XGROUP", "CREATE", .string(stream), "g", "$", "MKSTREAM")
        await #expect {
            try await client.send("XGROUP", "CREATE", .string(stream), "g", "$", "MKSTREAM")
        } throws: { error in
            (error as? RedisError)?.serverErrorPrefix == "BUSYGROUP"
        }
        await #expect {
            try await client.send("EVALSHA", "0000000000000000000000000000000000000000", 0)
        } throws: { error in
            (error as? RedisError)?.serverErrorPrefix == "NOSCRIPT"
        }
        let results = await client.pipeline([
            RedisCommand("HSET", .string(stream), "a", "b"),  // WRONGTYPE: the key is a stream
            RedisCommand("XLEN", .string(stream)),
        ])
        #expect(throws: RedisError.self) { try results[0].get() }
        #expect((try? results[0].get()) == nil)
        if case .failure(let error) = results[0] { #expect(error.serverErrorPrefix == "WRONGTYPE") }
        #expect(try results[1].get() == .integer(0))
        try await client.send("DEL", .string(stream))
    }

    @Test("nested arrays, nil and nested errors come back as a tree")
    func nestedReplies() async throws {
        let client = try TestRedis.standalone()
        defer { client.shutdown() }
        let reply = try await client.send(
            "EVAL", "return {1, {'a', {2, redis.error_reply('ERR inner')}}, false}", 0
        )
        #expect(reply == .array([.integer(1), .array([.bulkString([0x61]), .array([.integer(2), .error("ERR inner")])]), .null]))
    }

    @Test("a blocking read waits past the command deadline; its socket deadline is block + margin")
    func blockingRead() async throws {
        let client = try TestRedis.standalone {
            $0.commandTimeout = .milliseconds(100)
            $0.blockingMargin = .milliseconds(500)
        }
        defer { client.shutdown() }
        let stream = TestRedis.uniqueKey("block")
        try await client.send("XGROUP", "CREATE", .string(stream), "g", "$", "MKSTREAM")
        let empty = try await client.blocking(
            RedisCommand("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "BLOCK", 300, "STREAMS", .string(stream), ">"),
            block: .milliseconds(300)
        )
        #expect(empty == .null)
        // A read that blocks until another caller adds an entry.
        async let read = client.blocking(
            RedisCommand("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "BLOCK", 5000, "STREAMS", .string(stream), ">"),
            block: .seconds(5)
        )
        try await Task.sleep(for: .milliseconds(50))
        try await client.send("XADD", .string(stream), "*", "k", "v")
        let entries = try await read
        #expect(entries.array?.first?.array?.first?.bytes == Array(stream.utf8))
        try await client.send("DEL", .string(stream))
    }

    @Test("cancelling a blocking read ends it at once and leaves the client usable")
    func blockingCancellation() async throws {
        let client = try TestRedis.standalone()
        defer { client.shutdown() }
        let stream = TestRedis.uniqueKey("cancel")
        try await client.send("XGROUP", "CREATE", .string(stream), "g", "$", "MKSTREAM")
        let task = Task {
            try await client.blocking(
                RedisCommand("XREADGROUP", "GROUP", "g", "c", "BLOCK", 60_000, "STREAMS", .string(stream), ">"),
                block: .seconds(60)
            )
        }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        await #expect {
            try await task.value
        } throws: { error in
            (error as? RedisError)?.code == .cancelled
        }
        #expect(try await client.send("PING") == .simpleString("PONG"))
        // The server side ends the cancelled reader's connection too: no client is left blocked on the stream.
        var blocked = -1
        for _ in 0..<50 {
            let info = try await client.send("INFO", "clients").string ?? ""
            blocked = info.split(whereSeparator: \.isNewline)
                .first { $0.hasPrefix("blocked_clients:") }
                .flatMap { Int($0.dropFirst("blocked_clients:".count)) } ?? -1
            if blocked == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(blocked == 0)
        try await client.send("DEL", .string(stream))
    }

    @Test("a command past its deadline fails with a timeout; the connection is replaced")
    func deadline() async throws {
        let client = try TestRedis.standalone {
            $0.commandTimeout = .milliseconds(200)
            $0.connectionsPerNode = 1
        }
        defer { client.shutdown() }
        // BLPOP sent as an ordinary command blocks for 2 s on the server, past the 200 ms deadline.
        await #expect {
            try await client.send("BLPOP", .string(TestRedis.uniqueKey("nothing")), 2)
        } throws: { error in
            (error as? RedisError)?.code == .timeout
        }
        #expect(try await client.send("PING") == .simpleString("PONG"))
    }

    @Test("Functions: loaded once per version, called, reloaded when missing")
    func functions() async throws {
        let client = try TestRedis.standalone()
        defer { client.shutdown() }
        let name = "markovtest\(UInt32.random(in: 0...UInt32.max))"
        let source = """
            #!lua name=\(name)
            redis.register_function('\(name)_incr', function(keys, args)
                return redis.call('INCRBY', keys[1], args[1])
            end)
            """
        let library = RedisFunctionLibrary(name: name, version: "1", source: source)
        #expect(try await client.load(library).count == 1)
        #expect(try await client.load(library).isEmpty, "the same version is not loaded again")
        let key = TestRedis.uniqueKey("fn")
        #expect(try await client.call("\(name)_incr", in: library, keys: [.string(key)], arguments: [5]) == .integer(5))
        // A new version replaces the old one.
        let v2 = RedisFunctionLibrary(name: name, version: "2", source: source)
        #expect(try await client.load(v2).count == 1)
        #expect(try await client.send("FCALL_RO", .string(v2.versionFunction), 0).string == "2")
        // A server that lost the library gets it back on the next call.
        try await client.send("FUNCTION", "DELETE", .string(name))
        #expect(try await client.call("\(name)_incr", in: v2, keys: [.string(key)], arguments: [1]) == .integer(6))
        try await client.send("FUNCTION", "DELETE", .string(name))
        try await client.send("DEL", .string(key))
    }
}

@Suite("Private Redis servers", .enabled(if: TestRedis.isConfigured))
struct PrivateServerTests {
    @Test("AUTH and SELECT from the URL; a wrong password is a clear error without the password")
    func authAndSelect() async throws {
        let server = try PrivateRedisServer(extraArguments: ["--requirepass", "s3cr3t-pw"])
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://:s3cr3t-pw@127.0.0.1:\(server.port)/3"),
            logger: TestRedis.logger
        )
        defer { client.shutdown() }
        try await client.send("SET", "k", "in-db-3")
        let db0 = RedisClient(
            configuration: try RedisConfiguration(url: "redis://:s3cr3t-pw@127.0.0.1:\(server.port)/0"),
            logger: TestRedis.logger
        )
        defer { db0.shutdown() }
        #expect(try await db0.send("GET", "k") == .null)
        #expect(try await db0.send("SELECT", 3) == .simpleString("OK"))

        var wrong = try RedisConfiguration(url: "redis://:not-the-pw@127.0.0.1:\(server.port)")
        wrong.commandTimeout = .milliseconds(300)
        let bad = RedisClient(configuration: wrong, logger: TestRedis.logger)
        defer { bad.shutdown() }
        await #expect {
            try await bad.send("PING")
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            let text = "\(error)"
            return error.code == .connectionFailed && text.contains("AUTH") && !text.contains("not-the-pw")
        }
    }

    @Test("unix socket URLs")
    func unixSocket() async throws {
        let server = try PrivateRedisServer()
        let client = RedisClient(configuration: try RedisConfiguration(url: "unix://\(server.socketPath)"), logger: TestRedis.logger)
        defer { client.shutdown() }
        #expect(try await client.send("PING") == .simpleString("PONG"))
    }

    @Test("a server killed mid-pipeline fails the pipeline clearly; the client recovers after a restart")
    func killMidPipeline() async throws {
        let server = try PrivateRedisServer()
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)")
        configuration.commandTimeout = .seconds(10)
        let client = RedisClient(configuration: configuration, logger: TestRedis.logger)
        defer { client.shutdown() }
        #expect(try await client.send("PING") == .simpleString("PONG"))
        // A pipeline whose middle command keeps the server busy for 3 s, so the kill lands inside it.
        let busy = """
            local start = redis.call('TIME')
            while true do
                local now = redis.call('TIME')
                if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 3000000 then return 1 end
            end
            """
        let commands = (0..<1000).map { RedisCommand("HINCRBY", "h", .string("f\($0)"), 1) }
            + [RedisCommand("EVAL", .string(busy), 0)]
            + (0..<1000).map { RedisCommand("HINCRBY", "h", .string("g\($0)"), 1) }
        async let outcomes = client.pipeline(commands)
        // The busy script runs for 3 s; killing after 1 s lands inside it even on a loaded machine.
        try await Task.sleep(for: .seconds(1))
        server.kill()
        let results = await outcomes
        #expect(results.count == commands.count)
        for result in results {
            guard case .failure(let failure) = result else {
                Issue.record("a command of the killed pipeline succeeded")
                break
            }
            #expect([.connectionClosed, .connectionFailed].contains(failure.code), "\(failure)")
        }
        // While the server is down, a command fails with a connection error instead of hanging.
        var down = try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)")
        down.commandTimeout = .milliseconds(300)
        let probe = RedisClient(configuration: down, logger: TestRedis.logger)
        defer { probe.shutdown() }
        await #expect {
            try await probe.send("PING")
        } throws: { error in
            (error as? RedisError)?.code == .connectionFailed
        }
        try server.start()
        #expect(try await client.send("PING") == .simpleString("PONG"))
        #expect(try await client.send("SET", "after", "restart") == .simpleString("OK"))
    }
}
