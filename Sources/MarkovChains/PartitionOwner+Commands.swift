import Logging
import MarkovCore
import Redis
import CoreMetrics
import ServiceLifecycle
import Synchronization

/// The commands a partition owner carries out in order with the messages: forgetting a user, deleting a guild's
/// data, and upgrading a guild written in the earlier layout. Each is a sequence of write calls that may be cut
/// short by a crash and run again from the start: every step is idempotent, and the command's entry counts as
/// applied only with its last call, which also reports the outcome to whoever waits for it.
extension PartitionOwner {
    /// Carries out a command entry.
    mutating func run(command item: Item, lane: EventLog.Lane, statistics: inout Trainer.Statistics) async throws(RedisError) {
        guard let chain = self.chains[item.event.guildID] else { return }
        let outcome: String
        switch item.event.kind {
        case .guildRemoved, .deleteData:
            // The deletion's last call marks the entry applied and reports.
            try await self.delete(chain, keepingOptOuts: item.event.kind == .deleteData, item: item, lane: lane)
            if item.event.kind == .guildRemoved { statistics.guildsRemoved += 1 }
            return
        case .forgetUser:
            guard let user = item.event.authorID else { return }
            outcome = "forgotten=\(try await self.forget(user, in: chain, lane: lane, statistics: &statistics))"
        case .memberLeft:
            guard let user = item.event.authorID else { return }
            let purges = try await self.redis.send(RedisCommand("GET", .string(chain.keys.purgeOnLeave))).string == "on"
            if purges {
                let forgotten = try await self.forget(user, in: chain, optingOut: false, lane: lane, statistics: &statistics)
                self.logger.info("member left: their messages are forgotten", metadata: ["guild": "\(chain.guild)", "user": "\(user)", "messages": "\(forgotten)"])
                outcome = "forgotten=\(forgotten)"
            } else {
                outcome = "kept"
            }
        case .migrate:
            outcome = "layout=\(ChainLayout.version)"
        case .relearn:
            let (scanned, changed) = try await self.relearn(chain, reply: item.event.reply, lane: lane, statistics: &statistics)
            outcome = "messages=\(scanned) relearnt=\(changed)"
        case .restore:
            // Each part marks its entry applied with its own writes.
            try await self.restore(chain, item: item, lane: lane)
            return
        default:
            return
        }
        var write = ChainWrite(keys: chain.keys)
        var lanes = chain.applied
        lanes[lane] = item.id
        write.hset(":meta", chain.metaFields(lanes: lanes))
        if let reply = item.event.reply { write.reply(ChainKeys.replySuffix(reply), outcome, ttlMilliseconds: 600_000) }
        try await self.send([WriteCall(guild: chain.guild, last: item.id, write: write)], lane: lane)
    }

    // MARK: Restoring an export

    /// Writes one part of a restore (``GuildArchive/Part``). The first part checks that the guild holds no learnt
    /// messages (or is this same restore, started before) and writes the file's totals and bucket table shape with a
    /// mark naming the restore; later parts of a restore not so marked are skipped; the last marks it done. A
    /// guild restored from the same file before answers `restored=already` and changes nothing.
    private mutating func restore(_ chain: GuildChain, item: Item, lane: EventLog.Lane) async throws(RedisError) {
        var lanes = chain.applied
        lanes[lane] = item.id
        var write = ChainWrite(keys: chain.keys)
        func finish(_ outcome: String?) async throws(RedisError) {
            write.hset(":meta", lanes.sorted { $0.key.rawValue < $1.key.rawValue }.map { ($0.key.appliedField, $0.value.description) })
            if let outcome, let reply = item.event.reply { write.reply(ChainKeys.replySuffix(reply), outcome, ttlMilliseconds: 600_000) }
            try await self.send([WriteCall(guild: chain.guild, last: item.id, write: write)], lane: lane)
        }
        let part: GuildArchive.Part
        do {
            part = try GuildArchive.Part(payload: item.event.payload ?? [])
        } catch {
            self.logger.warning("restore part refused", metadata: ["guild": "\(chain.guild)", "error": "\(error)"])
            return try await finish("error=\(error)")
        }
        let marks = try await self.redis.send(RedisCommand("HMGET", .string(chain.keys.meta), "restoring", "restored")).array ?? []
        let restoring = marks.first?.string, restored = marks.dropFirst().first?.string
        if part.index == 1 {
            if restored == part.digest { return try await finish("restored=already") }
            if restoring != part.digest {
                let records = try await self.redis.send(RedisCommand("EXISTS", .string(chain.keys.messages))).int ?? 0
                if chain.counters.messages > 0 || chain.counters.states > 0 || records > 0 {
                    return try await finish("error=guild \(chain.guild) has learnt messages; delete its data first (markov delete-guild --guild \(chain.guild))")
                }
            }
            if part.header.stateSize != chain.stateSize {
                return try await finish("error=the file was trained with state size \(part.header.stateSize); this system uses \(chain.stateSize)")
            }
            // The totals and shape first, so that messages learnt between parts find the states where they will be.
            write.persist(":meta")
            write.hdel(":meta", [Array("deleted".utf8), Array("restored".utf8)])
            write.hset(":meta", part.header.meta.sorted { $0.key < $1.key } + [("restoring", part.digest)])
        } else if restoring != part.digest {
            // The restore was refused or is done: its later parts change nothing.
            return try await finish(nil)
        }
        for record in part.records { write.restore(record) }
        var outcome: String?
        if part.isLast {
            write.hdel(":meta", [Array("restoring".utf8)])
            write.hset(":meta", [("restored", part.digest)])
            outcome = "keys=\(part.keys)"
        }
        try await finish(outcome)
        if part.index == 1 {
            // What this owner knew of the guild is void: it reads the restored states from Redis from now on.
            var meta = part.header.meta
            meta["wseq"] = String(self.chains[chain.guild]?.wseq ?? 0)
            meta["epoch"] = String(self.handle.epoch)
            for (lane, id) in lanes { meta[lane.appliedField] = id.description }
            self.drop(chain.guild)
            self.chains[chain.guild] = GuildChain(guild: chain.guild, stateSize: self.trainer.store.stateSize, meta: meta)
            self.fenced.insert(chain.guild)
        }
        if part.isLast {
            self.logger.info("guild restored", metadata: ["guild": "\(chain.guild)", "keys": "\(part.keys)", "restore": "\(part.digest)"])
        }
    }

    // MARK: Forgetting a user

    /// Opts the user out (unless `optingOut` is false: a member who left), then forgets every message of theirs, a
    /// page of records at a time. Returns how many.
    private mutating func forget(
        _ user: Snowflake, in chain: GuildChain, optingOut: Bool = true, lane: EventLog.Lane, statistics: inout Trainer.Statistics
    ) async throws(RedisError) -> Int {
        if optingOut {
            var write = ChainWrite(keys: chain.keys)
            write.sadd(":optout", [Array(user.rawValue.utf8)])
            try await self.send([WriteCall(guild: chain.guild, last: nil, write: write)], lane: lane)
        }
        var forgotten = 0
        var cursor = "0"
        repeat {
            guard let chain = self.chains[chain.guild] else { throw RedisError(.protocolError, "guild \(chain.guild) was forgotten mid-purge") }
            let reply = try await self.redis.send(RedisCommand("HSCAN", .string(chain.keys.messages), .string(cursor), "COUNT", 500))
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw RedisError(.protocolError, "HSCAN answered \(reply)")
            }
            cursor = next
            let flat = parts[1].array ?? []
            var plan = Plan()
            var messages: [(tokens: [String], scope: ChainScope)] = []
            var effects: [Plan.Effect] = []
            for index in stride(from: 0, to: flat.count - 1, by: 2) {
                guard let id = flat[index].string, let bytes = flat[index + 1].bytes, MessageRecord.isLearnt(bytes, by: user.rawValue),
                      let record = MessageRecord(bytes), case .learnt = record
                else { continue }
                let tokens = record.learntTokens
                if !tokens.isEmpty {
                    effects += [.unlearn(tokens, record.scope), .contentHash(MessageRecord.contentHash(tokens), -1)]
                    messages.append((tokens, record.scope))
                }
                effects += [.record(id: id, .deleted), .image(id: id, url: nil)]
                forgotten += 1
            }
            guard !effects.isEmpty else { continue }
            plan.items = [(StreamID(milliseconds: 0, sequence: 0), effects)]
            if !chain.isComplete, let reason = try await self.load([(chain, messages)])[chain.guild] {
                throw RedisError(.protocolError, reason)
            }
            try await self.send(self.encode(plan, chain: chain, lane: lane, marking: false, statistics: &statistics), lane: lane)
        } while cursor != "0"
        self.logger.info("user forgotten", metadata: ["guild": "\(chain.guild)", "user": "\(user)", "messages": "\(forgotten)"])
        return forgotten
    }

    // MARK: Learning the history again under the guild's filters

    /// Learns every recorded message again under the guild's filters now, a page of records at a time: a message
    /// whose learnt tokens change is unlearnt as it was and learnt anew; its record keeps its tokens with the new
    /// filters. Progress goes to `<reply key>:progress` (`scanned total`). Returns the records read and the
    /// messages changed.
    private mutating func relearn(
        _ chain: GuildChain, reply: String?, lane: EventLog.Lane, statistics: inout Trainer.Statistics
    ) async throws(RedisError) -> (scanned: Int, changed: Int) {
        let stored = try await self.redis.send(RedisCommand("GET", .string(chain.keys.filters))).string
        let filters = await self.filters(guild: chain.guild, stored: stored)
        let total = try await self.redis.send(RedisCommand("HLEN", .string(chain.keys.messages))).int ?? 0
        let progressKey = reply.map { chain.keys.key(ChainKeys.replySuffix($0)) + ":progress" }
        var scanned = 0, changed = 0
        var cursor = "0"
        repeat {
            guard let chain = self.chains[chain.guild] else { throw RedisError(.protocolError, "guild \(chain.guild) was forgotten mid-relearn") }
            let reply = try await self.redis.send(RedisCommand("HSCAN", .string(chain.keys.messages), .string(cursor), "COUNT", 500))
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw RedisError(.protocolError, "HSCAN answered \(reply)")
            }
            cursor = next
            let flat = parts[1].array ?? []
            var messages: [(tokens: [String], scope: ChainScope)] = []
            var effects: [Plan.Effect] = []
            for index in stride(from: 0, to: flat.count - 1, by: 2) {
                scanned += 1
                guard let id = flat[index].string, let bytes = flat[index + 1].bytes, let record = MessageRecord(bytes),
                      case .learnt(let author, let tokens, let old, let scope) = record, old != filters
                else { continue }
                let before = record.learntTokens
                let relearnt = MessageRecord.learnt(author: author, tokens: tokens, filters: filters, scope: scope)
                let after = relearnt.learntTokens
                // Under either filters the same was learnt: the record is right as it is.
                guard before != after else { continue }
                if !before.isEmpty {
                    effects += [.unlearn(before, scope), .contentHash(MessageRecord.contentHash(before), -1)]
                    messages.append((before, scope))
                }
                if !after.isEmpty {
                    effects += [.learn(after, scope), .contentHash(MessageRecord.contentHash(after), 1)]
                    messages.append((after, scope))
                }
                effects.append(.record(id: id, relearnt))
                changed += 1
            }
            if !effects.isEmpty {
                var plan = Plan()
                plan.items = [(StreamID(milliseconds: 0, sequence: 0), effects)]
                if !chain.isComplete, let reason = try await self.load([(chain, messages)])[chain.guild] {
                    throw RedisError(.protocolError, reason)
                }
                try await self.send(self.encode(plan, chain: chain, lane: lane, marking: false, statistics: &statistics), lane: lane)
            }
            if let progressKey {
                try await self.redis.send(RedisCommand("SET", .string(progressKey), .string("\(min(scanned, max(total, scanned))) \(max(total, scanned))"), "PX", 600_000))
            }
        } while cursor != "0"
        self.logger.info(
            "guild relearnt under its filters",
            metadata: ["guild": "\(chain.guild)", "filters": "\(filters)", "messages": "\(scanned)", "changed": "\(changed)"]
        )
        return (scanned, changed)
    }

    // MARK: Deleting a guild's data

    /// Unlinks every key of the guild (but its opt-outs, when kept), in calls of a thousand keys, then leaves a
    /// meta of only the fencing epoch and the entries applied, so that no paused owner and no redelivered entry can
    /// bring data back. Returns how many keys there were (at most).
    @discardableResult
    private mutating func delete(_ chain: GuildChain, keepingOptOuts: Bool, item: Item, lane: EventLog.Lane) async throws(RedisError) -> Int {
        var suffixes: [String] = (0..<chain.shape.buckets).map(ChainKeys.bucketSuffix)
        for state in try await self.members(of: chain.keys.key(ChainKeys.bigStatesSuffix)) {
            let text = Array(state.utf8)
            suffixes += [ChainKeys.aliasSuffix(text), ChainKeys.pendingSuffix(text), ChainKeys.changesSuffix(text)]
        }
        suffixes += try await self.legacySuffixes(chain, shape: chain.legacyShape)
        var owners: Set<ChainKeys.Owner> = [.chain, .responder]
        if !keepingOptOuts { owners.insert(.optOuts) }
        suffixes += ChainKeys.fixedSuffixes(of: owners)
        var calls = Self.unlinkCalls(suffixes, chain: chain)
        var write = ChainWrite(keys: chain.keys)
        write.unlink([":meta"])
        var kept: [(String, String)] = [("epoch", String(self.handle.epoch)), ("layout", String(ChainLayout.version)), ("deleted", "1")]
        var lanes = chain.applied
        lanes[lane] = item.id
        for (lane, id) in lanes { kept.append((lane.appliedField, id.description)) }
        write.hset(":meta", kept)
        // The fencing fields outlive the data by an hour (longer than any lease), then go too.
        write.expire(":meta", milliseconds: Self.tombstoneLifetime)
        let outcome = "keys=\(suffixes.count)"
        if let reply = item.event.reply { write.reply(ChainKeys.replySuffix(reply), outcome, ttlMilliseconds: 600_000) }
        calls.append(WriteCall(guild: chain.guild, last: item.id, write: write))
        try await self.send(calls, lane: lane)
        // What is left is an empty guild, known entirely.
        var meta = Dictionary(uniqueKeysWithValues: kept)
        meta["wseq"] = String(self.chains[chain.guild]?.wseq ?? 0)
        self.drop(chain.guild)
        self.chains[chain.guild] = GuildChain(guild: chain.guild, stateSize: self.trainer.store.stateSize, meta: meta)
        self.fenced.insert(chain.guild)
        self.logger.info("guild data deleted", metadata: ["guild": "\(chain.guild)", "keys": "\(suffixes.count)", "opt-outs kept": "\(keepingOptOuts)"])
        return suffixes.count
    }

    /// How long a deleted guild's meta keeps its fencing epoch and applied entries.
    static let tombstoneLifetime = 3_600_000

    /// The members of a set, read a page at a time.
    private func members(of key: String) async throws(RedisError) -> [String] {
        var members: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await self.redis.send(RedisCommand("SSCAN", .string(key), .string(cursor), "COUNT", 1000))
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else { break }
            cursor = next
            members += (parts[1].array ?? []).compactMap(\.string)
        } while cursor != "0"
        return members
    }

    /// The keys of the earlier layout, for a guild that still has some.
    private func legacySuffixes(_ chain: GuildChain, shape: LinearHashing?) async throws(RedisError) -> [String] {
        guard let shape else { return [] }
        var suffixes = (0..<shape.buckets).map(ChainKeys.legacyBucketSuffix) + [ChainKeys.legacyBigStatesSuffix]
        for state in try await self.members(of: chain.keys.key(ChainKeys.legacyBigStatesSuffix)) {
            suffixes += ChainKeys.legacyBigSuffixes(state)
        }
        return suffixes
    }

    // MARK: Upgrading from the earlier layout

    /// Rewrites a guild of layout 1 in the current layout: every state is read (a bucket page at a time), encoded,
    /// and written to the new key families while readers keep using the old ones; one call then switches the
    /// guild's layout, and the old keys are unlinked. Run again from the start after a crash (the new keys are
    /// written with the same values; the old ones are untouched until the switch).
    mutating func upgrade(_ chain: GuildChain) async throws(RedisError) {
        var chain = chain
        if chain.layout != ChainLayout.version {
            chain = try await self.rewrite(chain)
        }
        if let legacy = chain.legacyShape {
            let suffixes = try await self.legacySuffixes(chain, shape: legacy)
            var calls = Self.unlinkCalls(suffixes, chain: chain)
            var write = ChainWrite(keys: chain.keys)
            write.hdel(":meta", [Array("legacy_cleanup".utf8), Array("legacy_L".utf8), Array("legacy_p".utf8)])
            calls.append(WriteCall(guild: chain.guild, last: nil, write: write))
            try await self.send(calls, lane: .live)
            self.chains[chain.guild]?.legacyShape = nil
        }
    }

    private mutating func rewrite(_ chain: GuildChain) async throws(RedisError) -> GuildChain {
        let legacy = chain.shape
        let shape = LinearHashing.shape(for: chain.counters.states)
        let guild = chain.guild
        let stateSize = chain.stateSize
        var totals = GuildChain.Counters(messages: chain.counters.messages, states: 0, transitions: 0, count: 0, rebuilds: chain.counters.rebuilds)
        let started = ContinuousClock.now
        self.logger.info("upgrading a guild to the current layout", metadata: ["guild": "\(guild)", "states": "\(chain.counters.states)"])
        for page in stride(from: 0, to: legacy.buckets, by: 64) {
            let buckets = Array(page..<min(legacy.buckets, page + 64))
            let replies = await self.redis.pipeline(buckets.map { RedisCommand("HGETALL", .string(chain.keys.key(ChainKeys.legacyBucketSuffix($0)))) })
            var states: [(text: String, successors: [(String, UInt32)])] = []
            var big: [String] = []
            for result in replies {
                let flat = try result.get().array ?? []
                for index in stride(from: 0, to: flat.count - 1, by: 2) {
                    guard let state = flat[index].string, let value = flat[index + 1].string else { continue }
                    if value.hasPrefix("#") || value.hasPrefix("*") {
                        big.append(state)
                    } else {
                        states.append((state, Self.legacySuccessors(value)))
                    }
                }
            }
            if !big.isEmpty {
                let counts = await self.redis.pipeline(big.map { RedisCommand("HGETALL", .string(chain.keys.key(":s:" + $0))) })
                for (state, result) in zip(big, counts) {
                    let flat = try result.get().array ?? []
                    var successors: [(String, UInt32)] = []
                    for index in stride(from: 0, to: flat.count - 1, by: 2) {
                        if let token = flat[index].string, let count = flat[index + 1].int, count > 0 { successors.append((token, UInt32(count))) }
                    }
                    states.append((state, successors))
                }
            }
            var write = ChainWrite(keys: chain.keys)
            var bucketWrites: [String: [(field: [UInt8], value: [UInt8])]] = [:]
            var bigStates: [[UInt8]] = []
            for (text, successors) in states where !successors.isEmpty {
                let tokens = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                let encoded = successors.map { token, count in
                    let next = Array((tokens.dropFirst() + [token]).joined(separator: " ").utf8)
                    return ChainLayout.Successor(token: Array(token.utf8), nextHash: token.isEmpty ? 0 : ChainLayout.stateHash(next), count: count)
                }
                let field = Array(text.utf8)
                let hash = ChainLayout.stateHash(field)
                let suffix = field.count > ChainLayout.listpackLimit ? ChainKeys.longStatesSuffix : ChainKeys.bucketSuffix(shape.bucket(of: hash))
                if let value = ChainLayout.encodeSmall(encoded), value.count <= ChainLayout.listpackLimit {
                    bucketWrites[suffix, default: []].append((field, value))
                } else {
                    let built = ChainLayout.AliasBlob.build(encoded)
                    write.set(":x:", field, built.blob)
                    let header = ChainLayout.BigHeader(
                        total: UInt32(encoded.reduce(0) { $0 + $1.count }), columns: UInt32(encoded.count), pending: 0,
                        decrements: 0, live: UInt32(encoded.count)
                    )
                    bucketWrites[suffix, default: []].append((field, header.encoded))
                    bigStates.append(field)
                    totals.rebuilds += 1
                }
                totals.states += 1
                totals.transitions += successors.count
                totals.count += successors.reduce(0) { $0 + Int($1.1) }
            }
            for (suffix, pairs) in bucketWrites { write.hset(suffix, pairs) }
            write.sadd(ChainKeys.bigStatesSuffix, bigStates)
            if !write.isEmpty { try await self.send([WriteCall(guild: guild, last: nil, write: write)], lane: .live) }
            if page % 4096 == 0 && page > 0 {
                self.logger.info("upgrading", metadata: ["guild": "\(guild)", "buckets": "\(page)/\(legacy.buckets)"])
            }
        }
        // The switch: readers use the new layout from this call on.
        var write = ChainWrite(keys: chain.keys)
        let fields: [(String, String)] = [
            ("layout", String(ChainLayout.version)), ("state_size", String(stateSize)), ("messages", String(totals.messages)),
            ("states", String(totals.states)), ("transitions", String(totals.transitions)), ("count", String(totals.count)),
            ("rebuilds", String(totals.rebuilds)), ("L", String(shape.level)), ("p", String(shape.split)),
            ("legacy_cleanup", "1"), ("legacy_L", String(legacy.level)), ("legacy_p", String(legacy.split)),
        ]
        write.hset(":meta", fields)
        try await self.send([WriteCall(guild: guild, last: nil, write: write)], lane: .live)
        var meta = Dictionary(uniqueKeysWithValues: fields)
        meta["wseq"] = String(self.chains[guild]?.wseq ?? 0)
        meta["epoch"] = String(self.handle.epoch)
        for (lane, id) in chain.applied { meta[lane.appliedField] = id.description }
        let upgraded = GuildChain(guild: guild, stateSize: stateSize, meta: meta)
        self.drop(guild)
        self.chains[guild] = upgraded
        self.fenced.insert(guild)
        self.touch(guild)
        self.logger.info(
            "guild upgraded to the current layout",
            metadata: ["guild": "\(guild)", "states": "\(totals.states)", "seconds": "\(ContinuousClock.now - started)"]
        )
        return upgraded
    }

    /// A layout-1 small state's successors: `count<TAB>token` lines.
    static func legacySuccessors(_ value: String) -> [(String, UInt32)] {
        value.split(separator: "\n", omittingEmptySubsequences: false).compactMap { line in
            guard let tab = line.firstIndex(of: "\t"), let count = UInt32(line[..<tab]), count > 0 else { return nil }
            return (String(line[line.index(after: tab)...]), count)
        }
    }

    /// Write calls that unlink the guild's keys with these suffixes, a thousand keys a call.
    static func unlinkCalls(_ suffixes: [String], chain: GuildChain) -> [WriteCall] {
        stride(from: 0, to: suffixes.count, by: 1000).map { start in
            var write = ChainWrite(keys: chain.keys)
            write.unlink(Array(suffixes[start..<min(suffixes.count, start + 1000)]))
            return WriteCall(guild: chain.guild, last: nil, write: write)
        }
    }
}
