import MarkovCore
import Redis

/// Leases on the numbered resources of a group, such as the event-log partitions of the trainers: the group's
/// live members register with heartbeats, agree on who should hold what (``assignment(members:count:)``, the same
/// answer everywhere), and each resource is held by at most one member at a time, through a lease in Redis with a
/// TTL and a fencing epoch that grows with every new holder (LeaseLibrary.lua, docs/event-log.md).
///
/// A holder that stops renewing (dead, or paused past the TTL) loses the lease; the next holder's epoch is larger,
/// and every write it makes carries it, so the old holder's writes are refused where they land.
public struct LeaseTable: Sendable {
    public let redis: RedisClient
    /// The group's name, the prefix of its keys (`trainers`).
    public let group: String
    /// How many resources the group shares (numbered from 0).
    public let count: Int

    public init(redis: RedisClient, group: String, count: Int) {
        self.redis = redis
        self.group = group
        self.count = count
    }

    /// `<group>:members`: live members and their expiry.
    public var membersKey: String { "\(self.group):members" }
    /// `<group>:lease:{n}`: the holder of resource `n` and its epoch.
    public func leaseKey(_ resource: Int) -> String { "\(self.group):lease:{\(resource)}" }
    /// `<group>:epoch:{n}`: the last epoch given for resource `n`.
    public func epochKey(_ resource: Int) -> String { "\(self.group):epoch:{\(resource)}" }

    /// Loads the lease functions on every master.
    public func prepare() async throws(RedisError) {
        try await self.redis.load(ChainLibrary.leases)
    }

    /// Removes the consumers of every group of `stream` that hold no pending entry and have been idle for `idle`
    /// (departed processes, whose entries others claimed); returns them as `group consumer`.
    public func pruneConsumers(of stream: String, idle: Duration) async throws(RedisError) -> [String] {
        let reply = try await self.redis.call(
            "consumers_prune", in: ChainLibrary.leases, keys: [.string(stream)], arguments: [.integer(EventLog.milliseconds(idle))]
        )
        return (reply.array ?? []).compactMap(\.string)
    }

    /// Registers (or renews) `member` for `ttl`; returns the live members, sorted.
    public func heartbeat(member: String, ttl: Duration) async throws(RedisError) -> [String] {
        let reply = try await self.redis.call(
            "lease_heartbeat", in: ChainLibrary.leases, keys: [.string(self.membersKey)],
            arguments: [.string(member), .integer(EventLog.milliseconds(ttl))]
        )
        return (reply.array ?? []).compactMap(\.string)
    }

    /// Leaves the group (the others rebalance at their next heartbeat).
    public func leave(member: String) async throws(RedisError) {
        _ = try await self.redis.call(
            "lease_heartbeat", in: ChainLibrary.leases, keys: [.string(self.membersKey)], arguments: [.string(member), 0]
        )
    }

    /// The outcome of an attempt to take a lease.
    public enum Acquisition: Sendable, Hashable {
        /// Taken, with this epoch.
        case acquired(epoch: UInt64)
        /// Held by someone (`member epoch`).
        case held(by: String)
    }

    /// Takes resource `resource` for `member` if nobody holds it.
    public func acquire(_ resource: Int, member: String, ttl: Duration) async throws(RedisError) -> Acquisition {
        let reply = try await self.redis.call(
            "lease_acquire", in: ChainLibrary.leases, keys: [.string(self.leaseKey(resource)), .string(self.epochKey(resource))],
            arguments: [.string(member), .integer(EventLog.milliseconds(ttl))]
        )
        if let epoch = reply.int { return .acquired(epoch: UInt64(epoch)) }
        return .held(by: reply.array?.first?.string ?? "")
    }

    /// Extends the leases held by `member` (resource → epoch); returns those still held.
    public func renew(_ held: [Int: UInt64], member: String, ttl: Duration) async -> Set<Int> {
        let resources = Array(held.keys)
        let commands = resources.map { resource in
            RedisCommand(
                "FCALL",
                ["lease_renew", 1, .string(self.leaseKey(resource)), .string(member), .integer(Int(held[resource]!)),
                 .integer(EventLog.milliseconds(ttl))]
            )
        }
        var kept: Set<Int> = []
        for (resource, result) in zip(resources, await self.redis.pipeline(commands)) {
            if case .success(let reply) = result, reply.int == 1 { kept.insert(resource) }
        }
        return kept
    }

    /// Gives a lease back, if `member` still holds it at `epoch`.
    public func release(_ resource: Int, member: String, epoch: UInt64) async throws(RedisError) {
        _ = try await self.redis.call(
            "lease_release", in: ChainLibrary.leases, keys: [.string(self.leaseKey(resource))],
            arguments: [.string(member), .integer(Int(epoch))]
        )
    }

    /// Every lease's holder and epoch (resources nobody holds are absent).
    public func holders() async throws(RedisError) -> [Int: (member: String, epoch: UInt64)] {
        var holders: [Int: (member: String, epoch: UInt64)] = [:]
        let replies = await self.redis.pipeline((0..<self.count).map { RedisCommand("GET", .string(self.leaseKey($0))) })
        for (resource, result) in replies.enumerated() {
            guard let value = try result.get().string else { continue }
            let parts = value.split(separator: " ")
            guard parts.count == 2, let epoch = UInt64(parts[1]) else { continue }
            holders[resource] = (String(parts[0]), epoch)
        }
        return holders
    }

    /// Who should hold each resource: every member gets ⌊count / members⌋ or one more, and each resource goes to
    /// the member ranked highest for it (rendezvous hashing) that has room, so most resources stay where they are
    /// when a member joins or leaves. Every member computes the same answer from the same member list.
    public static func assignment(members: [String], count: Int) -> [String: Set<Int>] {
        let members = Array(Set(members)).sorted()
        guard !members.isEmpty else { return [:] }
        var room: [String: Int] = [:]
        for (index, member) in members.enumerated() {
            room[member] = count / members.count + (index < count % members.count ? 1 : 0)
        }
        var result: [String: Set<Int>] = [:]
        for resource in 0..<count {
            let ranked = members.sorted { Self.rank($0, resource) > Self.rank($1, resource) }
            guard let chosen = ranked.first(where: { room[$0, default: 0] > 0 }) else { continue }
            room[chosen, default: 0] -= 1
            result[chosen, default: []].insert(resource)
        }
        return result
    }

    /// A member's rank for a resource: FNV-1a of both, mixed by SplitMix64's finaliser, the same everywhere.
    static func rank(_ member: String, _ resource: Int) -> UInt64 {
        var hash = StableHash()
        hash.combine(member.utf8)
        hash.combine(String(resource).utf8)
        var z = hash.value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
