import MarkovCore
import Redis

/// The writes of one transaction on one guild: native commands on keys named by their suffix after the guild's
/// prefix (so a transaction only touches its own guild and slot), run by ``ChainWriter`` in `MULTI`/`EXEC` under a
/// `WATCH` of the guild's meta after checking its fencing epoch and write sequence.
struct ChainWrite: Sendable {
    let keys: ChainKeys
    /// The commands, in order.
    private(set) var commands: [RedisCommand] = []
    /// A rough cost of the transaction in Redis (fields and keys touched), to keep every one short.
    private(set) var cost = 0

    init(keys: ChainKeys) { self.keys = keys }

    var isEmpty: Bool { self.commands.isEmpty }

    /// The most fields one command carries.
    static let maxFields = 1000

    private mutating func add(_ name: String, _ arguments: [RedisArgument], cost: Int) {
        self.commands.append(RedisCommand(name, arguments))
        self.cost += cost
    }

    /// HSET fields and values.
    mutating func hset(_ suffix: String, _ pairs: [(field: [UInt8], value: [UInt8])]) {
        let key = RedisArgument.string(self.keys.key(suffix))
        for start in stride(from: 0, to: pairs.count, by: Self.maxFields) {
            let slice = pairs[start..<min(pairs.count, start + Self.maxFields)]
            var arguments: [RedisArgument] = [key]
            arguments.reserveCapacity(1 + 2 * slice.count)
            for pair in slice {
                arguments.append(.bytes(pair.field))
                arguments.append(.bytes(pair.value))
            }
            self.add("HSET", arguments, cost: 1 + slice.count)
        }
    }

    /// HSET text fields and values.
    mutating func hset(_ suffix: String, _ pairs: [(String, String)]) {
        self.hset(suffix, pairs.map { (Array($0.0.utf8), Array($0.1.utf8)) })
    }

    /// HDEL fields.
    mutating func hdel(_ suffix: String, _ fields: [[UInt8]]) {
        let key = RedisArgument.string(self.keys.key(suffix))
        for start in stride(from: 0, to: fields.count, by: Self.maxFields) {
            let slice = fields[start..<min(fields.count, start + Self.maxFields)]
            self.add("HDEL", [key] + slice.map { .bytes($0) }, cost: 1 + slice.count)
        }
    }

    mutating func set(_ suffix: String, _ value: [UInt8]) {
        self.add("SET", [.string(self.keys.key(suffix)), .bytes(value)], cost: 1 + value.count / 4096)
    }

    mutating func append(_ suffix: String, _ value: [UInt8]) {
        self.add("APPEND", [.string(self.keys.key(suffix)), .bytes(value)], cost: 1 + value.count / 4096)
    }

    /// UNLINK keys (suffixes).
    mutating func unlink(_ suffixes: [String]) {
        for start in stride(from: 0, to: suffixes.count, by: Self.maxFields) {
            let slice = suffixes[start..<min(suffixes.count, start + Self.maxFields)]
            self.add("UNLINK", slice.map { .string(self.keys.key($0)) }, cost: 2 * slice.count)
        }
    }

    mutating func sadd(_ suffix: String, _ members: [[UInt8]]) {
        guard !members.isEmpty else { return }
        self.add("SADD", [.string(self.keys.key(suffix))] + members.map { .bytes($0) }, cost: 1 + members.count)
    }

    mutating func srem(_ suffix: String, _ members: [[UInt8]]) {
        guard !members.isEmpty else { return }
        self.add("SREM", [.string(self.keys.key(suffix))] + members.map { .bytes($0) }, cost: 1 + members.count)
    }

    /// Adds each delta to its field; fields reaching zero or less are deleted (`markov_counters`).
    mutating func counters(_ suffix: String, _ deltas: [(field: String, delta: Int)]) {
        guard !deltas.isEmpty else { return }
        if deltas.allSatisfy({ $0.delta > 0 }) {
            for (field, delta) in deltas { self.add("HINCRBY", [.string(self.keys.key(suffix)), .string(field), .integer(delta)], cost: 1) }
            return
        }
        var arguments: [RedisArgument] = ["markov_counters", 1, .string(self.keys.meta), .string(suffix)]
        for (field, delta) in deltas {
            arguments.append(.string(field))
            arguments.append(.integer(delta))
        }
        self.add("FCALL", arguments, cost: 2 + 2 * deltas.count)
    }

    /// Moves states (with their values) from one bucket hash to another.
    mutating func move(from suffix: String, into target: String, fields: [[UInt8]], values: [(field: [UInt8], value: [UInt8])]) {
        guard !fields.isEmpty else { return }
        self.hdel(suffix, fields)
        if !values.isEmpty { self.hset(target, values) }
    }

    /// Splits a bucket hash whose states are not all known here: Redis hashes each one (`markov_split`).
    mutating func split(from suffix: String, into target: String, modulus: Int, target bucket: Int) {
        self.add("FCALL", ["markov_split", 1, .string(self.keys.meta), .string(suffix), .string(target), .integer(modulus), .integer(bucket)], cost: 150)
    }

    mutating func expire(_ suffix: String, milliseconds: Int) {
        self.add("PEXPIRE", [.string(self.keys.key(suffix)), .integer(milliseconds)], cost: 1)
    }

    /// Makes a key permanent again (a deleted guild's meta that gets data again).
    mutating func persist(_ suffix: String) {
        self.add("PERSIST", [.string(self.keys.key(suffix))], cost: 1)
    }

    /// Pushes a reply for someone waiting on the list (BLPOP), kept for `ttlMilliseconds`.
    mutating func reply(_ suffix: String, _ value: String, ttlMilliseconds: Int) {
        let key = RedisArgument.string(self.keys.key(suffix))
        self.add("LPUSH", [key, .string(value)], cost: 1)
        self.add("PEXPIRE", [key, .integer(ttlMilliseconds)], cost: 1)
    }
}
