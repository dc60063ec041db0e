import Redis
import Testing

@Suite("Cluster state (no server)")
struct ClusterStateTests {
    @Test("redirect replies are classified")
    func redirects() {
        #expect(ClusterRedirect(errorReply: "MOVED 3999 127.0.0.1:6381") == .moved(slot: 3999, to: .tcp(host: "127.0.0.1", port: 6381)))
        #expect(ClusterRedirect(errorReply: "ASK 3999 10.0.0.2:7000") == .ask(slot: 3999, to: .tcp(host: "10.0.0.2", port: 7000)))
        #expect(
            ClusterRedirect(errorReply: "MOVED 12 :7002", from: .tcp(host: "127.0.0.1", port: 7001))
                == .moved(slot: 12, to: .tcp(host: "127.0.0.1", port: 7002))
        )
        #expect(ClusterRedirect(errorReply: "TRYAGAIN Multiple keys request during rehashing of slot") == .retryLater)
        #expect(ClusterRedirect(errorReply: "CLUSTERDOWN The cluster is down") == .retryLater)
        #expect(ClusterRedirect(errorReply: "LOADING Redis is loading the dataset in memory") == .retryLater)
        #expect(ClusterRedirect(errorReply: "ERR unknown command") == .none)
        #expect(ClusterRedirect(errorReply: "MOVED nonsense") == .none)
        #expect(ClusterRedirect(errorReply: "MOVED 99999 127.0.0.1:1") == .none)
        #expect(ClusterRedirect(errorReply: "") == .none)
    }

    static func node(_ fields: [(String, RedisReply)]) -> RedisReply {
        .array(fields.flatMap { [RedisReply.bulkString(Array($0.0.utf8)), $0.1] })
    }

    static func text(_ value: String) -> RedisReply { .bulkString(Array(value.utf8)) }

    @Test("CLUSTER SHARDS builds the slot map from online masters")
    func shards() throws {
        let reply = RedisReply.array([
            Self.node([
                ("slots", .array([.integer(0), .integer(5460), .integer(10923), .integer(10923)])),
                ("nodes", .array([
                    Self.node([("id", Self.text("a")), ("port", .integer(7001)), ("ip", Self.text("127.0.0.1")),
                               ("role", Self.text("master")), ("health", Self.text("online"))]),
                    Self.node([("id", Self.text("r")), ("port", .integer(7004)), ("ip", Self.text("127.0.0.1")),
                               ("role", Self.text("replica")), ("health", Self.text("online"))]),
                ])),
            ]),
            Self.node([
                ("slots", .array([.integer(5461), .integer(10922), .integer(10924), .integer(16383)])),
                ("nodes", .array([
                    Self.node([("id", Self.text("b")), ("port", .integer(7002)), ("ip", Self.text("")),
                               ("endpoint", Self.text("")), ("role", Self.text("master")),
                               ("health", Self.text("online"))]),
                ])),
            ]),
        ])
        let topology = try ClusterTopology(shardsReply: reply, asked: .tcp(host: "10.1.1.1", port: 7001))
        #expect(topology.masters == [.tcp(host: "127.0.0.1", port: 7001), .tcp(host: "10.1.1.1", port: 7002)])
        #expect(topology.coversAllSlots)
        #expect(topology.master(forSlot: 0) == .tcp(host: "127.0.0.1", port: 7001))
        #expect(topology.master(forSlot: 10923) == .tcp(host: "127.0.0.1", port: 7001))
        #expect(topology.master(forSlot: 10922) == .tcp(host: "10.1.1.1", port: 7002))
        #expect(topology.master(forSlot: 16383) == .tcp(host: "10.1.1.1", port: 7002))
    }

    @Test("CLUSTER SLOTS builds the same map; gaps stay unserved")
    func slots() throws {
        let reply = RedisReply.array([
            .array([.integer(0), .integer(8191), .array([Self.text("127.0.0.1"), .integer(7001), Self.text("a")])]),
            .array([.integer(8192), .integer(16000), .array([Self.text("127.0.0.1"), .integer(7002)])]),
        ])
        let topology = try ClusterTopology(slotsReply: reply, asked: .tcp(host: "127.0.0.1", port: 7001))
        #expect(topology.masters.count == 2)
        #expect(!topology.coversAllSlots)
        #expect(topology.master(forSlot: 16001) == nil)
        #expect(topology.master(forSlot: 8192) == .tcp(host: "127.0.0.1", port: 7002))
    }

    @Test("a MOVED patch reassigns one slot")
    func movedPatch() throws {
        var topology = ClusterTopology()
        topology.assign(0...16383, to: .tcp(host: "a", port: 1))
        topology.assign(42...42, to: .tcp(host: "b", port: 2))
        #expect(topology.master(forSlot: 42) == .tcp(host: "b", port: 2))
        #expect(topology.master(forSlot: 41) == .tcp(host: "a", port: 1))
        #expect(topology.masters.count == 2)
    }

    @Test("malformed topology replies throw protocol errors")
    func malformed() {
        #expect(throws: RedisError.self) {
            try ClusterTopology(slotsReply: .array([.integer(1)]), asked: .tcp(host: "a", port: 1))
        }
        #expect(throws: RedisError.self) {
            try ClusterTopology(shardsReply: .simpleString("OK"), asked: .tcp(host: "a", port: 1))
        }
    }
}
