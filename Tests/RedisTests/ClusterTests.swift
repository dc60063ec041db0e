import Foundation
import Redis
import Testing

@Suite("Redis Cluster (3 masters)", .enabled(if: TestRedis.isConfigured))
struct ClusterTests {
    @Test("the slot map has three masters and agrees with CLUSTER KEYSLOT")
    func topology() async throws {
        let client = try TestRedis.cluster()
        defer { client.shutdown() }
        let masters = try await client.masters()
        #expect(masters.count == 3)
        for key in ["123456789", "{g:42}:states", "plain", "{}", "a{b}c"] {
            let slot = try await client.send(RedisCommand("CLUSTER", ["KEYSLOT", .string(key)]))
            #expect(slot.int == Int(HashSlot.slot(forKey: key)), "\(key)")
        }
    }

    @Test("commands and pipelines reach the right master; results come back in order")
    func pipelineAcrossNodes() async throws {
        let client = try TestRedis.cluster()
        defer { client.shutdown() }
        let prefix = TestRedis.uniqueKey("cp")
        let keys = (0..<3000).map { "\(prefix):\($0)" }
        let sets = await client.pipeline(keys.enumerated().map { RedisCommand("SET", .string($1), .integer($0)) })
        #expect(sets.allSatisfy { (try? $0.get()) == .simpleString("OK") })
        let gets = await client.pipeline(keys.map { RedisCommand("GET", .string($0)) })
        for (index, result) in gets.enumerated() {
            #expect(try result.get().int == index)
        }
        // The keys really are spread over all three masters.
        var perNode: [Int] = []
        for master in try await client.masters() {
            perNode.append(try await client.send(RedisCommand("DBSIZE"), to: master).int ?? 0)
        }
        #expect(perNode.allSatisfy { $0 >= 500 })
        _ = await client.pipeline(keys.map { RedisCommand("DEL", .string($0)) })
    }

    @Test("Functions are loaded on every master and callable for keys on each")
    func functionsOnAllMasters() async throws {
        let client = try TestRedis.cluster()
        defer { client.shutdown() }
        let name = "markovclustertest\(UInt32.random(in: 0...UInt32.max))"
        let library = RedisFunctionLibrary(name: name, version: "1", source: """
            #!lua name=\(name)
            redis.register_function{function_name='\(name)_echo', flags={'no-writes'},
                callback=function(keys, args) return keys[1] end}
            """)
        #expect(try await client.load(library).count == 3)
        #expect(try await client.load(library).isEmpty)
        for master in try await client.masters() {
            let version = try await client.send(RedisCommand("FCALL_RO", .string(library.versionFunction), 0), to: master)
            #expect(version.string == "1")
        }
        for tag in 0..<12 {
            let key = "{t\(tag)}:k"
            let reply = try await client.call("\(name)_echo", in: library, keys: [.string(key)], readOnly: true)
            #expect(reply.string == key)
        }
        for master in try await client.masters() {
            try await client.send(RedisCommand("FUNCTION", "DELETE", .string(name)), to: master)
        }
    }

    /// Moves `slot` from `source` to `target` the way `redis-cli --cluster reshard` does.
    static func migrate(
        slot: UInt16, keys: [String], from source: RedisEndpoint, to target: RedisEndpoint,
        client: RedisClient, finish: Bool = true
    ) async throws {
        let sourceID = try await client.send(RedisCommand("CLUSTER", "MYID"), to: source).string ?? ""
        let targetID = try await client.send(RedisCommand("CLUSTER", "MYID"), to: target).string ?? ""
        try await client.send(RedisCommand("CLUSTER", ["SETSLOT", .integer(Int(slot)), "IMPORTING", .string(sourceID)]), to: target)
        try await client.send(RedisCommand("CLUSTER", ["SETSLOT", .integer(Int(slot)), "MIGRATING", .string(targetID)]), to: source)
        guard case .tcp(let host, let port) = target else { return }
        for key in keys {
            try await client.send(
                RedisCommand("MIGRATE", [.string(host), .integer(port), .string(key), 0, 5000]), to: source
            )
        }
        if finish {
            try await Self.assign(slot: slot, to: targetID, client: client)
        }
    }

    static func assign(slot: UInt16, to nodeID: String, client: RedisClient) async throws {
        for master in try await client.masters() {
            try await client.send(RedisCommand("CLUSTER", ["SETSLOT", .integer(Int(slot)), "NODE", .string(nodeID)]), to: master)
        }
    }

    @Test("MOVED after a slot migration, and ASK while one is under way, are followed")
    func migrationRedirects() async throws {
        // Keys of this test live in one slot that no other test uses.
        let key = "{markov-migration-test}:value"
        let slot = HashSlot.slot(forKey: key)
        let admin = try TestRedis.cluster()
        defer { admin.shutdown() }
        let client = try TestRedis.cluster()
        defer { client.shutdown() }

        try await client.send("SET", .string(key), "before")
        let masters = try await admin.masters()
        // The owner is the master that answers GET instead of MOVED.
        var owner: RedisEndpoint?
        for master in masters where (try? await admin.send(RedisCommand("GET", .string(key)), to: master)) != nil {
            owner = master
        }
        let source = try #require(owner)
        let target = try #require(masters.first { $0 != source })
        let sourceID = try await admin.send(RedisCommand("CLUSTER", "MYID"), to: source).string ?? ""

        // Finished migration: the client's cached map is stale and the old owner answers MOVED.
        try await Self.migrate(slot: slot, keys: [key], from: source, to: target, client: admin)
        #expect(try await client.send("GET", .string(key)).string == "before")
        try await client.send("SET", .string(key), "after-moved")
        #expect(try await admin.send(RedisCommand("GET", .string(key)), to: target).string == "after-moved")

        // Migration under way back to the source: the key already moved, so the target answers ASK.
        try await Self.migrate(slot: slot, keys: [key], from: target, to: source, client: admin, finish: false)
        #expect(try await client.send("GET", .string(key)).string == "after-moved")
        try await Self.assign(slot: slot, to: sourceID, client: admin)
        #expect(try await client.send("GET", .string(key)).string == "after-moved")
        try await client.send("DEL", .string(key))
    }

    @Test("a blocking read routes to its stream's master")
    func blockingInCluster() async throws {
        let client = try TestRedis.cluster()
        defer { client.shutdown() }
        let stream = "{\(TestRedis.uniqueKey("cs"))}:stream"
        try await client.send("XGROUP", "CREATE", .string(stream), "g", "$", "MKSTREAM")
        async let read = client.blocking(
            RedisCommand("XREADGROUP", "GROUP", "g", "c", "BLOCK", 5000, "STREAMS", .string(stream), ">"),
            block: .seconds(5)
        )
        try await Task.sleep(for: .milliseconds(50))
        try await client.send("XADD", .string(stream), "*", "field", .bytes([0x00, 0xFF]))
        let reply = try await read
        let fields = reply.array?.first?.array?[1].array?.first?.array?[1].array
        #expect(fields == [.bulkString(Array("field".utf8)), .bulkString([0x00, 0xFF])])
        try await client.send("DEL", .string(stream))
    }
}
