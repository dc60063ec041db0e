/// Which master serves each of the 16384 slots, learnt from `CLUSTER SHARDS` (Redis 7) or `CLUSTER SLOTS`, and
/// patched by `MOVED` redirects between refreshes. A pure value: no I/O.
public struct ClusterTopology: Sendable, Equatable {
    /// The masters, in the order first seen.
    public private(set) var masters: [RedisEndpoint]
    /// For each slot, an index into ``masters``, or `-1` when no master serves it.
    private var owners: [Int16]

    /// A topology in which no slot is served.
    public init() {
        self.masters = []
        self.owners = Array(repeating: -1, count: HashSlot.count)
    }

    /// The master serving `slot`, if any.
    public func master(forSlot slot: UInt16) -> RedisEndpoint? {
        let owner = self.owners[Int(slot)]
        return owner < 0 ? nil : self.masters[Int(owner)]
    }

    /// Whether every slot has a master.
    public var coversAllSlots: Bool { !self.owners.contains(-1) }

    /// Records that `endpoint` serves the slots in `range`.
    public mutating func assign(_ range: ClosedRange<Int>, to endpoint: RedisEndpoint) {
        let index: Int
        if let existing = self.masters.firstIndex(of: endpoint) {
            index = existing
        } else {
            index = self.masters.count
            self.masters.append(endpoint)
        }
        for slot in range where (0..<HashSlot.count).contains(slot) {
            self.owners[slot] = Int16(index)
        }
    }

    /// Parses a `CLUSTER SHARDS` reply. `asked` stands in for a node that reports no address of its own.
    public init(shardsReply reply: RedisReply, asked: RedisEndpoint) throws(RedisError) {
        self.init()
        guard let shards = reply.array else { throw Self.malformed("CLUSTER SHARDS") }
        for shard in shards {
            let fields = try Self.fields(of: shard, "CLUSTER SHARDS")
            guard let slots = fields["slots"]?.array, let nodes = fields["nodes"]?.array else {
                throw Self.malformed("CLUSTER SHARDS")
            }
            var master: RedisEndpoint?
            for node in nodes {
                let info = try Self.fields(of: node, "CLUSTER SHARDS")
                guard info["role"]?.string == "master", info["health"]?.string ?? "online" == "online" else {
                    continue
                }
                guard let port = info["port"]?.int ?? info["tls-port"]?.int else { continue }
                let host = [info["ip"]?.string, info["endpoint"]?.string].compactMap { $0 }
                    .first(where: { !$0.isEmpty && $0 != "?" })
                master = Self.endpoint(host: host, port: port, asked: asked)
            }
            guard let master else { continue }
            var index = slots.startIndex
            while index + 1 < slots.endIndex {
                guard let start = slots[index].int, let end = slots[index + 1].int, start <= end else {
                    throw Self.malformed("CLUSTER SHARDS")
                }
                self.assign(start...end, to: master)
                index += 2
            }
        }
    }

    /// Parses a `CLUSTER SLOTS` reply. `asked` stands in for a node that reports no address of its own.
    public init(slotsReply reply: RedisReply, asked: RedisEndpoint) throws(RedisError) {
        self.init()
        guard let ranges = reply.array else { throw Self.malformed("CLUSTER SLOTS") }
        for range in ranges {
            guard let items = range.array, items.count >= 3, let start = items[0].int, let end = items[1].int,
                start <= end, let node = items[2].array, node.count >= 2, let port = node[1].int
            else { throw Self.malformed("CLUSTER SLOTS") }
            let host = node[0].string.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 }
            self.assign(start...end, to: Self.endpoint(host: host, port: port, asked: asked))
        }
    }

    private static func endpoint(host: String?, port: Int, asked: RedisEndpoint) -> RedisEndpoint {
        if let host { return .tcp(host: host, port: port) }
        if case .tcp(let askedHost, _) = asked { return .tcp(host: askedHost, port: port) }
        return .tcp(host: "127.0.0.1", port: port)
    }

    /// A RESP2 "map" (a flat array of name, value, name, value, …) as a dictionary.
    private static func fields(of reply: RedisReply, _ command: String) throws(RedisError) -> [String: RedisReply] {
        guard let items = reply.array, items.count % 2 == 0 else { throw malformed(command) }
        var fields: [String: RedisReply] = [:]
        for index in stride(from: 0, to: items.count, by: 2) {
            guard let name = items[index].string else { throw malformed(command) }
            fields[name] = items[index + 1]
        }
        return fields
    }

    private static func malformed(_ command: String) -> RedisError {
        RedisError(.protocolError, "the reply to \(command) does not have the documented shape")
    }
}
