import MarkovCore
import Redis

/// Reads a whole guild's chain from Redis and checks it against the layout's rules and the meta's totals
/// (`markov inspect --guild G --check`): every value decodes, every state is in the bucket its hash and the
/// meta's table shape put it in, every successor carries the hash of the state it leads to, a big state's alias
/// blob, increments and decrements agree with each other and with its header, and the states, distinct
/// transitions and counts add up to the meta's. Read-only; a layout-2 guild only.
public struct ChainCheck: Sendable {
    /// What was found: the totals counted from the data, and every problem (empty when the chain is sound).
    public struct Report: Sendable {
        public var states = 0
        public var bigStates = 0
        public var transitions = 0
        public var count = 0
        public var problems: [String] = []
        /// Problems past this many are counted, not listed.
        public var unlisted = 0

        mutating func problem(_ text: String) {
            if self.problems.count < 100 { self.problems.append(text) } else { self.unlisted += 1 }
        }
    }

    let redis: RedisClient
    let keys: ChainKeys
    let stateSize: Int

    public init(redis: RedisClient, guild: Snowflake, stateSize: Int) {
        self.redis = redis
        self.keys = ChainKeys(guild: guild)
        self.stateSize = stateSize
    }

    /// Checks the chain, reporting progress as (bucket hashes read, bucket hashes in all).
    public func run(progress: (Int, Int) -> Void = { _, _ in }) async throws(RedisError) -> Report {
        var report = Report()
        let meta = PartitionOwner.fields(try await self.redis.send(RedisCommand("HGETALL", .string(self.keys.meta))))
        func int(_ name: String) -> Int { meta[name].flatMap { Int($0) } ?? 0 }
        guard meta["layout"].flatMap({ Int($0) }) == ChainLayout.version else {
            report.problem("the guild's meta is not layout \(ChainLayout.version) (run `markov migrate` first, or the guild has no data)")
            return report
        }
        let shape = LinearHashing(level: int("L"), split: int("p"))
        var locations: [GuildChain.Location] = (0..<shape.buckets).map { .bucket($0) }
        locations.append(.long)
        var bigs: [(text: [UInt8], header: ChainLayout.BigHeader)] = []
        var start = 0
        while start < locations.count {
            let chunk = locations[start..<min(start + 256, locations.count)]
            let replies = await self.redis.pipeline(chunk.map { RedisCommand("HGETALL", .string(self.keys.key($0.suffix))) })
            for (location, result) in zip(chunk, replies) {
                let flat = try result.get().array ?? []
                for index in stride(from: 0, to: flat.count - 1, by: 2) {
                    let text = flat[index].bytes ?? []
                    let value = flat[index + 1].bytes ?? []
                    if let header = self.check(text: text, value: value, location: location, shape: shape, into: &report) {
                        bigs.append((text, header))
                    }
                }
            }
            start += chunk.count
            progress(start, locations.count)
        }
        try await self.checkBigStates(bigs, into: &report)
        for (name, counted) in [("states", report.states), ("transitions", report.transitions), ("count", report.count)]
        where int(name) != counted {
            report.problem("the meta says \(name) \(int(name)), the data holds \(counted)")
        }
        return report
    }

    /// Checks one field of a bucket hash; returns a big state's header (checked with its keys later).
    private func check(
        text: [UInt8], value: [UInt8], location: GuildChain.Location, shape: LinearHashing, into report: inout Report
    ) -> ChainLayout.BigHeader? {
        let name = String(decoding: text, as: UTF8.self)
        let hash = ChainLayout.stateHash(text)
        let expected = GuildChain.Location.of(text: text, hash: hash, shape: shape)
        if expected != location { report.problem("state \"\(name)\" is in \(location.suffix), its hash puts it in \(expected.suffix)") }
        report.states += 1
        if text.split(separator: 0x20, omittingEmptySubsequences: false).count != self.stateSize {
            report.problem("state \"\(name)\" is not \(self.stateSize) words")
        }
        switch ChainLayout.decodeState(value) {
        case .small(let successors):
            if successors.isEmpty { report.problem("state \"\(name)\" has no successors") }
            for successor in successors {
                if successor.count == 0 { report.problem("state \"\(name)\" keeps a successor of count 0") }
                self.checkNextHash(state: text, token: successor.token, hash: successor.nextHash, into: &report)
                report.transitions += 1
                report.count += Int(successor.count)
            }
            return nil
        case .big(let header):
            report.bigStates += 1
            return header
        case nil:
            report.problem("state \"\(name)\" has a value of no known layout")
            return nil
        }
    }

    /// The hash a successor carries must be the hash of the state it leads to (0 for the end).
    private func checkNextHash(state: [UInt8], token: [UInt8], hash: UInt32, into report: inout Report) {
        let expected: UInt32
        if token.isEmpty {
            expected = 0
        } else {
            // A state of a scope other than the guild's starts with its marker byte (``ChainScope``), which the next
            // state keeps.
            let marker = state.first.map { $0 < 0x20 } == true ? [state[0]] : []
            var words = state.dropFirst(marker.count).split(separator: 0x20, omittingEmptySubsequences: false).map(Array.init)
            words.removeFirst()
            words.append(token)
            expected = ChainLayout.stateHash(marker + Array(words.joined(separator: [0x20])))
        }
        if hash != expected {
            report.problem("state \"\(String(decoding: state, as: UTF8.self))\" → \"\(String(decoding: token, as: UTF8.self))\" carries the wrong next-state hash")
        }
    }

    private func checkBigStates(_ states: [(text: [UInt8], header: ChainLayout.BigHeader)], into report: inout Report) async throws(RedisError) {
        let members = Set(((try await self.redis.send(RedisCommand("SMEMBERS", .string(self.keys.key(ChainKeys.bigStatesSuffix))))).array ?? [])
            .compactMap(\.bytes))
        for (text, _) in states where !members.contains(text) {
            report.problem("big state \"\(String(decoding: text, as: UTF8.self))\" is missing from the set of big states")
        }
        if members.count != states.count {
            report.problem("the set of big states has \(members.count) members, the buckets \(states.count) big states")
        }
        var start = 0
        while start < states.count {
            let chunk = states[start..<min(start + 128, states.count)]
            let replies = await self.redis.pipeline(chunk.flatMap { StoredBigState.commands(keys: self.keys, text: $0.text) })
            for (index, (text, header)) in chunk.enumerated() {
                self.checkBig(text: text, header: header, stored: try StoredBigState(replies, at: 3 * index), into: &report)
            }
            start += chunk.count
        }
    }

    private func checkBig(
        text: [UInt8], header: ChainLayout.BigHeader, stored: StoredBigState, into report: inout Report
    ) {
        let name = String(decoding: text, as: UTF8.self)
        guard let blob = stored.blob, let decoded = ChainLayout.AliasBlob.decode(blob) else {
            report.problem("big state \"\(name)\" has no readable alias blob")
            return
        }
        var byOffset: [UInt32: Int] = [:]
        for (index, entry) in decoded.entries.enumerated() { byOffset[entry.offset] = index }
        var increments = [UInt32](repeating: 0, count: decoded.entries.count)
        var decrements = [UInt32](repeating: 0, count: decoded.entries.count)
        if stored.units.count % 4 != 0 { report.problem("big state \"\(name)\" has a partial increment") }
        for offset in stored.unitOffsets {
            guard let index = byOffset[offset] else {
                report.problem("big state \"\(name)\" has an increment of no token (offset \(offset))")
                continue
            }
            increments[index] += 1
        }
        for (field, value) in stored.changes {
            guard let change = ChainLayout.AliasBlob.decodeChange(field: field, value: value), let index = byOffset[change.offset] else {
                report.problem("big state \"\(name)\" has a malformed decrement")
                continue
            }
            decrements[index] = change.decrements
            let weight = decoded.entries[index].base + increments[index]
            if change.weight != weight { report.problem("big state \"\(name)\" has a decrement of weight \(change.weight), the token's is \(weight)") }
            if change.decrements > weight { report.problem("big state \"\(name)\" takes more than a token's count away") }
        }
        let base = decoded.entries.reduce(UInt64(0)) { $0 + UInt64($1.base) }
        if base != UInt64(decoded.total) { report.problem("big state \"\(name)\": the alias table's total \(decoded.total) is not its entries' \(base)") }
        var live = 0
        for (index, entry) in decoded.entries.enumerated() {
            let count = Int(entry.base) + Int(increments[index]) - Int(decrements[index])
            guard count > 0 else { continue }
            live += 1
            report.transitions += 1
            report.count += count
            self.checkNextHash(state: text, token: entry.token, hash: entry.nextHash, into: &report)
        }
        if live == 0 { report.problem("big state \"\(name)\" has no successors") }
        let found = ChainLayout.BigHeader(
            total: decoded.total, columns: decoded.columns, pending: UInt32(stored.units.count / 4),
            decrements: decrements.reduce(0, +), live: UInt32(live)
        )
        if header != found { report.problem("big state \"\(name)\" has the header \(header), its keys hold \(found)") }
    }
}
