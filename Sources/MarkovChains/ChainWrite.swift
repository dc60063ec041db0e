import MarkovCore
import Redis

/// The writes of one transaction on one guild: native commands on keys named by their suffix after the guild's
/// prefix (so a transaction only touches its own guild and slot), run by ``ChainWriter`` in `MULTI`/`EXEC` under a
/// `WATCH` of the guild's meta after checking its fencing epoch and write sequence. Commands are encoded straight
/// into their wire form: every key shares the guild's hash tag, so its slot is computed once.
struct ChainWrite: Sendable {
    let keys: ChainKeys
    /// The commands, in order.
    private(set) var commands: [RedisCommand] = []
    /// A rough cost of the transaction in Redis (fields and keys touched), to keep every one short.
    private(set) var cost = 0
    /// The guild's key prefix, and the slot every key of the guild is in.
    private let prefix: [UInt8]
    private let slot: UInt16

    init(keys: ChainKeys) {
        self.keys = keys
        self.prefix = Array(keys.prefix.utf8)
        self.slot = HashSlot.slot(forKey: keys.prefix)
    }

    var isEmpty: Bool { self.commands.isEmpty }

    /// The most fields one command carries.
    static let maxFields = 1000

    /// A command on one key of the guild: `name`, the key, then `count` arguments written by `body`.
    private mutating func command(
        _ name: String, suffix: [UInt8], count: Int, capacity: Int, cost: Int,
        _ body: (inout RedisCommandBuilder) -> Void
    ) {
        var builder = RedisCommandBuilder(name, arguments: 1 + count, capacity: 32 + self.prefix.count + suffix.count + capacity)
        builder.append(self.prefix, suffix)
        body(&builder)
        self.commands.append(builder.build(slot: self.slot))
        self.cost += cost
    }

    /// HSET of `count` fields and values written by `body` (two arguments each), on the key `suffix`.
    mutating func hset(suffix: [UInt8], count: Int, _ body: (inout RedisCommandBuilder) -> Void) {
        guard count > 0 else { return }
        self.command("HSET", suffix: suffix, count: 2 * count, capacity: 48 * count, cost: 1 + count, body)
    }

    /// HSET fields and values.
    mutating func hset(_ suffix: String, _ pairs: [(field: [UInt8], value: [UInt8])]) {
        let suffix = Array(suffix.utf8)
        for start in stride(from: 0, to: pairs.count, by: Self.maxFields) {
            let slice = pairs[start..<min(pairs.count, start + Self.maxFields)]
            self.hset(suffix: suffix, count: slice.count) { builder in
                for pair in slice {
                    builder.append(pair.field)
                    builder.append(pair.value)
                }
            }
        }
    }

    /// HSET text fields and values.
    mutating func hset(_ suffix: String, _ pairs: [(String, String)]) {
        self.hset(suffix, pairs.map { (Array($0.0.utf8), Array($0.1.utf8)) })
    }

    /// HDEL of fields, on the key `suffix`.
    mutating func hdel(suffix: [UInt8], _ fields: some Collection<[UInt8]>) {
        guard !fields.isEmpty else { return }
        self.command("HDEL", suffix: suffix, count: fields.count, capacity: 24 * fields.count, cost: 1 + fields.count) { builder in
            for field in fields { builder.append(field) }
        }
    }

    /// HDEL fields.
    mutating func hdel(_ suffix: String, _ fields: [[UInt8]]) {
        let suffix = Array(suffix.utf8)
        for start in stride(from: 0, to: fields.count, by: Self.maxFields) {
            self.hdel(suffix: suffix, fields[start..<min(fields.count, start + Self.maxFields)])
        }
    }

    /// SET of a value on the key whose suffix is `suffix` then `name`.
    mutating func set(_ suffix: String, _ name: [UInt8] = [], _ value: [UInt8]) {
        self.command("SET", suffix: Array(suffix.utf8) + name, count: 1, capacity: value.count, cost: 1 + value.count / 4096) { builder in
            builder.append(value)
        }
    }

    /// APPEND of a value to the key whose suffix is `suffix` then `name`.
    mutating func append(_ suffix: String, _ name: [UInt8] = [], _ value: [UInt8]) {
        self.command("APPEND", suffix: Array(suffix.utf8) + name, count: 1, capacity: value.count, cost: 1 + value.count / 4096) { builder in
            builder.append(value)
        }
    }

    /// HSET of fields and values on the key whose suffix is `suffix` then `name`.
    mutating func hset(_ suffix: String, _ name: [UInt8], _ pairs: [(field: [UInt8], value: [UInt8])]) {
        guard !pairs.isEmpty else { return }
        self.hset(suffix: Array(suffix.utf8) + name, count: pairs.count) { builder in
            for pair in pairs {
                builder.append(pair.field)
                builder.append(pair.value)
            }
        }
    }

    /// HDEL of fields on the key whose suffix is `suffix` then `name`.
    mutating func hdel(_ suffix: String, _ name: [UInt8], _ fields: [[UInt8]]) {
        self.hdel(suffix: Array(suffix.utf8) + name, fields)
    }

    /// UNLINK keys (suffixes).
    mutating func unlink(_ suffixes: [String]) {
        self.unlink(suffixes.map { Array($0.utf8) })
    }

    /// UNLINK keys (suffixes as bytes).
    mutating func unlink(_ suffixes: [[UInt8]]) {
        for start in stride(from: 0, to: suffixes.count, by: Self.maxFields) {
            let slice = suffixes[start..<min(suffixes.count, start + Self.maxFields)]
            var builder = RedisCommandBuilder("UNLINK", arguments: slice.count, capacity: 64 * slice.count)
            for suffix in slice { builder.append(self.prefix, suffix) }
            self.commands.append(builder.build(slot: self.slot))
            self.cost += 2 * slice.count
        }
    }

    /// Writes a record of a guild archive (`markov restore`) to its key: HSET, SADD or SET, so writing it again
    /// changes nothing.
    mutating func restore(_ record: GuildArchive.Record) {
        switch record {
        case .hash(let suffix, let entries):
            for start in stride(from: 0, to: entries.count, by: Self.maxFields) {
                let slice = entries[start..<min(entries.count, start + Self.maxFields)]
                self.hset(suffix: suffix, count: slice.count) { builder in
                    for pair in slice {
                        builder.append(pair.field)
                        builder.append(pair.value)
                    }
                }
            }
        case .set(let suffix, let members):
            for start in stride(from: 0, to: members.count, by: Self.maxFields) {
                let slice = members[start..<min(members.count, start + Self.maxFields)]
                self.command("SADD", suffix: suffix, count: slice.count, capacity: 24 * slice.count, cost: 1 + slice.count) { builder in
                    for member in slice { builder.append(member) }
                }
            }
        case .string(let suffix, let value):
            self.set("", suffix, value)
        }
    }

    mutating func sadd(_ suffix: String, _ members: [[UInt8]]) {
        guard !members.isEmpty else { return }
        self.command("SADD", suffix: Array(suffix.utf8), count: members.count, capacity: 24 * members.count, cost: 1 + members.count) { builder in
            for member in members { builder.append(member) }
        }
    }

    mutating func srem(_ suffix: String, _ members: [[UInt8]]) {
        guard !members.isEmpty else { return }
        self.command("SREM", suffix: Array(suffix.utf8), count: members.count, capacity: 24 * members.count, cost: 1 + members.count) { builder in
            for member in members { builder.append(member) }
        }
    }

    /// Adds each delta to its field; fields reaching zero or less are deleted (`markov_counters`).
    mutating func counters(_ suffix: String, _ deltas: [(field: String, delta: Int)]) {
        guard !deltas.isEmpty else { return }
        if deltas.allSatisfy({ $0.delta > 0 }) {
            for (field, delta) in deltas { self.commands.append(RedisCommand("HINCRBY", [.string(self.keys.key(suffix)), .string(field), .integer(delta)])) }
            self.cost += deltas.count
            return
        }
        var arguments: [RedisArgument] = ["markov_counters", 1, .string(self.keys.meta), .string(suffix)]
        for (field, delta) in deltas {
            arguments.append(.string(field))
            arguments.append(.integer(delta))
        }
        self.commands.append(RedisCommand("FCALL", arguments))
        self.cost += 2 + 2 * deltas.count
    }

    /// Moves states (with their values) from one bucket hash to another.
    mutating func move(from suffix: String, into target: String, fields: [[UInt8]], values: [(field: [UInt8], value: [UInt8])]) {
        guard !fields.isEmpty else { return }
        self.hdel(suffix, fields)
        if !values.isEmpty { self.hset(target, values) }
    }

    /// Splits a bucket hash whose states are not all known here: Redis hashes each one (`markov_split`).
    mutating func split(from suffix: String, into target: String, modulus: Int, target bucket: Int) {
        self.commands.append(RedisCommand(
            "FCALL", ["markov_split", 1, .string(self.keys.meta), .string(suffix), .string(target), .integer(modulus), .integer(bucket)]
        ))
        self.cost += 150
    }

    mutating func expire(_ suffix: String, milliseconds: Int) {
        self.commands.append(RedisCommand("PEXPIRE", [.string(self.keys.key(suffix)), .integer(milliseconds)]))
        self.cost += 1
    }

    /// Makes a key permanent again (a deleted guild's meta that gets data again).
    mutating func persist(_ suffix: String) {
        self.commands.append(RedisCommand("PERSIST", [.string(self.keys.key(suffix))]))
        self.cost += 1
    }

    /// Pushes a reply for someone waiting on the list (BLPOP), kept for `ttlMilliseconds`.
    mutating func reply(_ suffix: String, _ value: String, ttlMilliseconds: Int) {
        let key = RedisArgument.string(self.keys.key(suffix))
        self.commands.append(RedisCommand("LPUSH", [key, .string(value)]))
        self.commands.append(RedisCommand("PEXPIRE", [key, .integer(ttlMilliseconds)]))
        self.cost += 2
    }
}
