import MarkovCore

/// A partition owner's knowledge of one guild's chain: every state it has read or written, with the counts, the
/// sampling tables and what Redis holds for each, so that a batch is merged per state here and Redis receives
/// finished values (docs/chain-store.md). Owned by one partition task; never shared.
///
/// The owner is the guild's only writer, so what it wrote stays true until it loses the partition. A chain is
/// **complete** when every state of the guild is known here (a guild that was empty when first touched): then a
/// state not known is a new one, and no read is needed before writing. Otherwise states are read on first use.
final class GuildChain {
    let guild: Snowflake
    let keys: ChainKeys
    let stateSize: Int

    /// The totals kept in the guild's meta.
    struct Counters: Equatable {
        var messages = 0
        var states = 0
        var transitions = 0
        var count = 0
        var rebuilds = 0
    }

    var counters = Counters()
    var shape = LinearHashing()
    /// The guild's write sequence after this owner's last call (`wseq` in the meta).
    var wseq = 0
    /// The last entry of each lane applied to the guild.
    var applied: [EventLog.Lane: StreamID] = [:]
    /// The guild's meta is what its deletion left (with a TTL): the next write makes it permanent again.
    var isTombstone: Bool
    /// Every state of the guild is in ``states``.
    private(set) var isComplete: Bool
    /// The layout version of the guild's data in Redis.
    var layout: Int
    /// The bucket table of layout-1 keys still in Redis (a guild not yet upgraded, or whose old keys are still to
    /// be unlinked).
    var legacyShape: LinearHashing?

    private(set) var tokens = TokenTable()
    private(set) var states: [StateKey: StateNode] = [:]
    /// For complete chains: the states stored in each bucket hash (to split buckets without reading them).
    private var buckets: [Int: [StateKey]] = [:]
    private var dirty: [StateKey] = []
    /// Big states whose blob grew or that have increments since it was built: compacted (rebuilt) when idle.
    private var uncompacted: Set<StateKey> = []
    /// A rough size of this chain in memory, for the owner's memory bound.
    private(set) var bytes = 0

    /// A chain as the guild's meta describes it (the reply of `markov_fence`).
    init(guild: Snowflake, stateSize: Int, meta: [String: String]) {
        self.guild = guild
        self.keys = ChainKeys(guild: guild)
        self.stateSize = stateSize
        func int(_ name: String) -> Int { meta[name].flatMap { Int($0) } ?? 0 }
        self.counters = Counters(
            messages: int("messages"), states: int("states"), transitions: int("transitions"), count: int("count"),
            rebuilds: int("rebuilds")
        )
        self.shape = LinearHashing(level: int("L"), split: int("p"))
        self.wseq = int("wseq")
        self.layout = meta["layout"].flatMap { Int($0) } ?? (int("states") > 0 || int("messages") > 0 ? 1 : ChainLayout.version)
        if let live = meta["applied"].flatMap(StreamID.init) { self.applied[.live] = live }
        if let bulk = meta["applied_bulk"].flatMap(StreamID.init) { self.applied[.bulk] = bulk }
        self.isComplete = self.counters.states == 0
        self.isTombstone = meta["deleted"] != nil
        if self.layout != ChainLayout.version {
            self.legacyShape = self.shape
        } else if meta["legacy_cleanup"] != nil {
            self.legacyShape = LinearHashing(level: int("legacy_L"), split: int("legacy_p"))
        }
    }

    // MARK: States

    /// The key of the state after `key` when `token` follows.
    func key(after key: StateKey, _ token: UInt32) -> StateKey { key.shifted(token, size: self.stateSize) }

    /// The state keys a message passes through: the start, then one per token (the last is followed by the end).
    func path(_ tokens: [String]) -> (keys: [StateKey], ids: [UInt32]) {
        var ids: [UInt32] = []
        ids.reserveCapacity(tokens.count)
        for token in tokens { ids.append(self.tokens.id(token)) }
        var keys: [StateKey] = [.start]
        keys.reserveCapacity(ids.count + 1)
        var key = StateKey.start
        for id in ids {
            key = key.shifted(id, size: self.stateSize)
            keys.append(key)
        }
        return (keys, ids)
    }

    /// The text of a state: its tokens joined by single spaces.
    func text(of key: StateKey) -> [UInt8] {
        var text: [UInt8] = []
        for (index, id) in key.ids(size: self.stateSize).enumerated() {
            if index > 0 { text.append(0x20) }
            text += self.tokens.utf8(id)
        }
        return text
    }

    /// Whether the state is known here (read, written, or known to be absent).
    func isKnown(_ key: StateKey) -> Bool { self.isComplete || self.states[key] != nil }

    /// Where a state of this text and hash is stored: its bucket hash, or the hash of long states.
    func location(text: [UInt8], hash: UInt32) -> (suffix: String, bucket: Int?) {
        if text.count > ChainLayout.listpackLimit { return (ChainKeys.longStatesSuffix, nil) }
        let bucket = self.shape.bucket(of: hash)
        return (ChainKeys.bucketSuffix(bucket), bucket)
    }

    private func node(_ key: StateKey) -> StateNode {
        if let node = self.states[key] { return node }
        let text = self.text(of: key)
        let node = StateNode(text: text, hash: ChainLayout.stateHash(text))
        self.states[key] = node
        self.bytes += node.estimatedBytes
        return node
    }

    /// Records what Redis holds for a state read from its bucket (`nil`: the state does not exist). A big
    /// state's header needs its blob and changes too: see ``loadBig(_:blob:changes:)``.
    func load(_ key: StateKey, value: [UInt8]?) throws(ChainDataError) {
        let node = self.node(key)
        guard let value else { return }
        switch ChainLayout.decodeState(value) {
        case .small(let successors):
            node.small = successors.map { SmallSuccessor(token: self.tokens.id(bytes: $0.token), count: $0.count, nextHash: $0.nextHash) }
            node.stored = .small
        case .big(let header):
            node.stored = .big
            node.big = BigState(header: header)
        case nil:
            throw ChainDataError("state \"\(String(decoding: node.text, as: UTF8.self))\" of guild \(self.guild) has a value of no known layout")
        }
        self.bytes += 12 * node.small.count
    }

    /// The keys of loaded big states whose blob and changes are still to be read.
    func bigStatesToRead(_ keys: [StateKey]) -> [StateKey] {
        keys.filter { self.states[$0]?.big?.isRead == false }
    }

    /// Completes a big state read from Redis with its alias blob and changes since the build.
    func loadBig(_ key: StateKey, blob: [UInt8]?, units: [UInt8]?, changes: [([UInt8], [UInt8])]) throws(ChainDataError) {
        guard let node = self.states[key], var big = node.big else { return }
        guard let blob, let decoded = ChainLayout.AliasBlob.decode(blob) else {
            throw ChainDataError("big state \"\(String(decoding: node.text, as: UTF8.self))\" of guild \(self.guild) has no readable alias blob")
        }
        big.areaLength = decoded.areaLength
        var byOffset: [UInt32: UInt32] = [:]
        for entry in decoded.entries {
            let id = self.tokens.id(bytes: entry.token)
            big.tokens[id] = BigToken(offset: entry.offset, base: entry.base, inc: 0, dec: 0, nextHash: entry.nextHash)
            byOffset[entry.offset] = id
        }
        if let units {
            for start in stride(from: 0, to: units.count - 3, by: 4) {
                let offset = UInt32(units[start]) | UInt32(units[start + 1]) << 8 | UInt32(units[start + 2]) << 16 | UInt32(units[start + 3]) << 24
                guard let id = byOffset[offset] else {
                    throw ChainDataError("big state \"\(String(decoding: node.text, as: UTF8.self))\" of guild \(self.guild) has an increment of no token")
                }
                big.tokens[id]!.inc += 1
            }
        }
        for (field, value) in changes {
            guard let change = ChainLayout.AliasBlob.decodeChange(field: field, value: value), let id = byOffset[change.offset] else {
                throw ChainDataError("big state \"\(String(decoding: node.text, as: UTF8.self))\" of guild \(self.guild) has a malformed decrement")
            }
            big.tokens[id]!.dec = change.decrements
            big.tokens[id]!.hasDecrements = true
        }
        big.isRead = true
        node.big = big
        self.bytes += 48 * big.tokens.count
    }

    /// Marks the chain complete: every state of the guild has been read (a full load).
    func markComplete() { self.isComplete = true }

    // MARK: Learning

    /// Adds (`delta` 1) or removes (`delta` -1) one message's transitions. Every state on its path must be known
    /// (``isKnown(_:)``). Returns the transitions changed.
    @discardableResult
    func learn(_ tokens: [String], delta: Int32) -> Int {
        guard !tokens.isEmpty else { return 0 }
        let (keys, ids) = self.path(tokens)
        var nodes: [StateNode] = []
        nodes.reserveCapacity(keys.count)
        for key in keys { nodes.append(self.node(key)) }
        for index in 0..<keys.count {
            let token = index < ids.count ? ids[index] : 0
            let nextHash = index < ids.count ? nodes[index + 1].hash : 0
            let node = nodes[index]
            if !node.isDirty {
                node.isDirty = true
                self.dirty.append(keys[index])
            }
            if node.big != nil, delta > 0 { self.uncompacted.insert(keys[index]) }
            self.apply(node, token: token, delta: delta, nextHash: nextHash)
        }
        return keys.count
    }

    private func apply(_ node: StateNode, token: UInt32, delta: Int32, nextHash: UInt32) {
        if node.big != nil {
            self.applyBig(node, token: token, delta: delta, nextHash: nextHash)
            return
        }
        if let index = node.small.firstIndex(where: { $0.token == token }) {
            let before = node.small[index].count
            let after = delta >= 0 ? before + UInt32(delta) : before - min(before, UInt32(-delta))
            node.small[index].count = after
            self.counters.count += Int(after) - Int(before)
            if before == 0 && after > 0 { self.counters.transitions += 1 }
            if before > 0 && after == 0 { self.counters.transitions -= 1 }
        } else if delta > 0 {
            node.small.append(SmallSuccessor(token: token, count: UInt32(delta), nextHash: nextHash))
            self.counters.count += Int(delta)
            self.counters.transitions += 1
            self.bytes += 12
        }
    }

    private func applyBig(_ node: StateNode, token: UInt32, delta: Int32, nextHash: UInt32) {
        guard var big = node.big else { return }
        node.big = nil // mutate the state's big part in place, without a copy
        defer { node.big = big }
        if var entry = big.tokens[token] {
            let before = entry.count
            if delta > 0 {
                // Decrements since the build are taken back first; the rest become pending increments.
                let cancel = min(entry.dec, UInt32(delta))
                entry.dec -= cancel
                big.header.decrements -= cancel
                let rest = UInt32(delta) - cancel
                if rest > 0 {
                    entry.inc += rest
                    big.header.pending += rest
                    for _ in 0..<rest { ChainLayout.appendU32(entry.offset, to: &big.newUnits) }
                }
            } else {
                let removed = min(before, UInt32(-delta))
                entry.dec += removed
                big.header.decrements += removed
            }
            let after = entry.count
            self.counters.count += Int(after) - Int(before)
            if before == 0 && after > 0 { self.counters.transitions += 1; big.header.live += 1 }
            if before > 0 && after == 0 { self.counters.transitions -= 1; big.header.live -= 1 }
            big.tokens[token] = entry
            big.changed.insert(token)
        } else if delta > 0 {
            let utf8 = self.tokens.utf8(token)
            let offset = big.areaLength
            big.newEntries += ChainLayout.AliasBlob.entry(token: utf8, nextHash: nextHash, base: 0)
            big.areaLength += UInt32(ChainLayout.AliasBlob.entryHeader + utf8.count)
            big.tokens[token] = BigToken(offset: offset, base: 0, inc: UInt32(delta), dec: 0, nextHash: nextHash)
            for _ in 0..<delta { ChainLayout.appendU32(offset, to: &big.newUnits) }
            big.header.pending += UInt32(delta)
            big.header.live += 1
            big.changed.insert(token)
            self.counters.count += Int(delta)
            self.counters.transitions += 1
            self.bytes += 48
        }
    }

    // MARK: Writing

    /// Appends the writes of every state changed since the last flush (and the bucket splits the new states
    /// call for) to `write`, and forgets the changes: the caller sends `write` and drops this chain if it fails.
    func flush(into write: inout ChainWrite) {
        let dirty = self.dirty
        self.dirty = []
        // States after this flush, to grow the bucket table first: splits move what Redis holds now, then every
        // changed state is written where the grown table puts it.
        var states = self.counters.states
        for key in dirty {
            guard let node = self.states[key] else { continue }
            let live = node.big.map { $0.header.live > 0 } ?? node.small.contains { $0.count > 0 }
            if node.stored == .none && live { states += 1 }
            if node.stored != .none && !live { states -= 1 }
        }
        while self.shape.needsSplit(items: states) {
            let modulus = 1 << (self.shape.level + 1)
            let (from, into) = self.shape.advance()
            if self.isComplete {
                var staying: [StateKey] = []
                var moving: [StateKey] = []
                for key in self.buckets[from] ?? [] {
                    guard let node = self.states[key] else { continue }
                    if self.shape.bucket(of: node.hash) == into { moving.append(key) } else { staying.append(key) }
                }
                self.buckets[from] = staying
                self.buckets[into] = moving
                // A changed state is written in its new bucket below; an unchanged one moves with its value.
                var values: [(field: [UInt8], value: [UInt8])] = []
                for key in moving {
                    guard let node = self.states[key], !node.isDirty, let value = self.storedValue(node) else { continue }
                    values.append((node.text, value))
                }
                write.move(
                    from: ChainKeys.bucketSuffix(from), into: ChainKeys.bucketSuffix(into),
                    fields: moving.compactMap { self.states[$0]?.text }, values: values
                )
            } else {
                write.split(from: ChainKeys.bucketSuffix(from), into: ChainKeys.bucketSuffix(into), modulus: modulus, target: into)
            }
        }
        var bucketWrites: [String: [(field: [UInt8], value: [UInt8])]] = [:]
        var bucketDeletes: [String: [[UInt8]]] = [:]
        var bigAdded: [[UInt8]] = []
        var bigRemoved: [[UInt8]] = []
        for key in dirty {
            guard let node = self.states[key] else { continue }
            node.isDirty = false
            let (suffix, bucket) = self.location(text: node.text, hash: node.hash)
            let wasStored = node.stored != .none
            if node.big != nil {
                self.flushBig(node, suffix: suffix, write: &write, bucketWrites: &bucketWrites, bucketDeletes: &bucketDeletes, removed: &bigRemoved)
            } else {
                node.small.removeAll { $0.count == 0 }
                if node.small.isEmpty {
                    if wasStored { bucketDeletes[suffix, default: []].append(node.text) }
                    node.stored = .none
                } else {
                    let successors = node.small.map {
                        ChainLayout.Successor(token: self.tokens.utf8($0.token), nextHash: $0.nextHash, count: $0.count)
                    }
                    if let value = ChainLayout.encodeSmall(successors), value.count <= ChainLayout.listpackLimit {
                        bucketWrites[suffix, default: []].append((node.text, value))
                        node.stored = .small
                    } else {
                        self.promote(node, successors: successors, suffix: suffix, write: &write, bucketWrites: &bucketWrites)
                        bigAdded.append(node.text)
                    }
                }
            }
            let isStored = node.stored != .none
            if isStored && !wasStored {
                self.counters.states += 1
                if self.isComplete, let bucket { self.buckets[bucket, default: []].append(key) }
            } else if !isStored && wasStored {
                self.counters.states -= 1
                if self.isComplete, let bucket { self.buckets[bucket]?.removeAll { $0 == key } }
            }
            if !isStored && self.isComplete {
                // A complete chain knows an unknown state is absent: no need to keep it.
                self.bytes -= node.estimatedBytes
                self.states[key] = nil
            }
        }
        // Splits first (above), then deletions, then values: a state moved by a split is deleted or rewritten in
        // its new bucket.
        for (suffix, fields) in bucketDeletes { write.hdel(suffix, fields) }
        for (suffix, pairs) in bucketWrites { write.hset(suffix, pairs) }
        write.sadd(ChainKeys.bigStatesSuffix, bigAdded)
        write.srem(ChainKeys.bigStatesSuffix, bigRemoved)
    }

    /// The value Redis holds for an unchanged state (what this chain last wrote or read).
    private func storedValue(_ node: StateNode) -> [UInt8]? {
        switch node.stored {
        case .none: return nil
        case .big: return node.big?.header.encoded
        case .small:
            return ChainLayout.encodeSmall(node.small.map {
                ChainLayout.Successor(token: self.tokens.utf8($0.token), nextHash: $0.nextHash, count: $0.count)
            })
        }
    }

    private func promote(
        _ node: StateNode, successors: [ChainLayout.Successor], suffix: String, write: inout ChainWrite,
        bucketWrites: inout [String: [(field: [UInt8], value: [UInt8])]]
    ) {
        let built = ChainLayout.AliasBlob.build(successors)
        var big = BigState(header: ChainLayout.BigHeader(
            total: UInt32(successors.reduce(0) { $0 + $1.count }), columns: UInt32(successors.count), pending: 0,
            decrements: 0, live: UInt32(successors.count)
        ))
        big.isRead = true
        big.areaLength = built.areaLength
        for (index, successor) in node.small.enumerated() {
            big.tokens[successor.token] = BigToken(offset: built.offsets[index], base: successor.count, inc: 0, dec: 0, nextHash: successor.nextHash)
        }
        let text = node.text
        write.set(ChainKeys.aliasSuffix(text), built.blob)
        if node.stored == .big {
            write.unlink([ChainKeys.pendingSuffix(text), ChainKeys.changesSuffix(text)])
        }
        bucketWrites[suffix, default: []].append((text, big.header.encoded))
        self.counters.rebuilds += 1
        self.bytes += 48 * node.small.count
        node.small = []
        node.big = big
        node.stored = .big
    }

    private func flushBig(
        _ node: StateNode, suffix: String, write: inout ChainWrite,
        bucketWrites: inout [String: [(field: [UInt8], value: [UInt8])]], bucketDeletes: inout [String: [[UInt8]]],
        removed: inout [[UInt8]]
    ) {
        guard var big = node.big else { return }
        let text = node.text
        if big.header.live == 0 {
            if node.stored != .none {
                write.unlink([ChainKeys.aliasSuffix(text), ChainKeys.pendingSuffix(text), ChainKeys.changesSuffix(text)])
                bucketDeletes[suffix, default: []].append(text)
                removed.append(text)
            }
            self.bytes -= 48 * big.tokens.count
            node.big = nil
            node.small = []
            node.stored = .none
            return
        }
        let total = big.header.total
        if node.stored == .none || node.rebuildRequested || big.header.pending > max(16, total / 4) || big.header.decrements > total / 4 {
            node.rebuildRequested = false
            // Rebuild from the counts: a new blob, no increments or changes pending.
            let live = big.tokens.filter { $0.value.count > 0 }.sorted { $0.value.offset < $1.value.offset }
            node.small = live.map { SmallSuccessor(token: $0.key, count: $0.value.count, nextHash: $0.value.nextHash) }
            node.big = nil
            let successors = node.small.map {
                ChainLayout.Successor(token: self.tokens.utf8($0.token), nextHash: $0.nextHash, count: $0.count)
            }
            self.bytes -= 48 * big.tokens.count
            self.promote(node, successors: successors, suffix: suffix, write: &write, bucketWrites: &bucketWrites)
            return
        }
        if !big.newEntries.isEmpty { write.append(ChainKeys.aliasSuffix(text), big.newEntries) }
        if !big.newUnits.isEmpty { write.append(ChainKeys.pendingSuffix(text), big.newUnits) }
        if !big.changed.isEmpty {
            // Decrements are kept for the tokens that have some (with their weight, for the sampler's acceptance).
            var pairs: [(field: [UInt8], value: [UInt8])] = []
            var cleared: [[UInt8]] = []
            for token in big.changed {
                guard let entry = big.tokens[token] else { continue }
                if entry.dec > 0 {
                    pairs.append((ChainLayout.AliasBlob.changeField(entry.offset),
                                  ChainLayout.AliasBlob.changeValue(decrements: entry.dec, weight: entry.base + entry.inc)))
                    big.tokens[token]!.hasDecrements = true
                } else if entry.hasDecrements {
                    cleared.append(ChainLayout.AliasBlob.changeField(entry.offset))
                    big.tokens[token]!.hasDecrements = false
                }
            }
            if !cleared.isEmpty { write.hdel(ChainKeys.changesSuffix(text), cleared) }
            if !pairs.isEmpty { write.hset(ChainKeys.changesSuffix(text), pairs) }
        }
        bucketWrites[suffix, default: []].append((text, big.header.encoded))
        big.newEntries = []
        big.newUnits = []
        big.changed = []
        node.big = big
        node.stored = .big
    }

    /// Asks for the rebuild of big states whose blob grew or that have increments pending, up to about
    /// `successors` successors in all (the owner does this when its partition is idle, so that what the appends
    /// left behind — increments, and the room Redis keeps after an APPEND — does not stay); returns whether any.
    func scheduleCompaction(successors budget: Int) -> Bool {
        var spent = 0
        var scheduled = false
        for key in self.uncompacted {
            guard spent < budget else { break }
            self.uncompacted.remove(key)
            guard let node = self.states[key], let big = node.big, node.stored == .big, big.isRead else { continue }
            node.rebuildRequested = true
            if !node.isDirty {
                node.isDirty = true
                self.dirty.append(key)
            }
            spent += big.tokens.count
            scheduled = true
        }
        return scheduled
    }

    /// Whether some big state waits for a compaction.
    var needsCompaction: Bool { !self.uncompacted.isEmpty }

    /// The meta fields of the chain as this owner knows them.
    func metaFields(lanes: [EventLog.Lane: StreamID]) -> [(String, String)] {
        var fields: [(String, String)] = [
            ("layout", String(ChainLayout.version)), ("state_size", String(self.stateSize)),
            ("messages", String(self.counters.messages)), ("states", String(self.counters.states)),
            ("transitions", String(self.counters.transitions)), ("count", String(self.counters.count)),
            ("rebuilds", String(self.counters.rebuilds)), ("L", String(self.shape.level)), ("p", String(self.shape.split)),
        ]
        for (lane, id) in lanes.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            fields.append((lane.appliedField, id.description))
        }
        return fields
    }
}

/// Stored chain data that cannot be read (written by something other than a trainer of this version, or damaged).
struct ChainDataError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Token ids of one guild in one owner's memory; never stored. Id 0 is the empty token (the start's padding, and
/// the end of a message).
struct TokenTable {
    private var texts: [String] = [""]
    private var bytes: [[UInt8]] = [[]]
    private var ids: [String: UInt32] = ["": 0]

    var count: Int { self.texts.count }

    mutating func id(_ token: String) -> UInt32 {
        if let id = self.ids[token] { return id }
        let id = UInt32(self.texts.count)
        self.texts.append(token)
        self.bytes.append(Array(token.utf8))
        self.ids[token] = id
        return id
    }

    mutating func id(bytes: [UInt8]) -> UInt32 { self.id(String(decoding: bytes, as: UTF8.self)) }

    func text(_ id: UInt32) -> String { self.texts[Int(id)] }
    func utf8(_ id: UInt32) -> [UInt8] { self.bytes[Int(id)] }
}

/// A state as its token ids (up to six, 32 bits each): the key of the owner's dictionaries.
struct StateKey: Hashable, Sendable {
    var low: UInt64
    var middle: UInt64
    var high: UInt64

    /// The start of a message: all empty tokens.
    static let start = StateKey(low: 0, middle: 0, high: 0)

    init(low: UInt64, middle: UInt64, high: UInt64) {
        self.low = low
        self.middle = middle
        self.high = high
    }

    /// The state without its first token, with `token` appended (tokens are 32-bit slots, the first lowest).
    @inline(__always)
    func shifted(_ token: UInt32, size: Int) -> StateKey {
        if size <= 2 {
            if size == 1 { return StateKey(low: UInt64(token), middle: 0, high: 0) }
            return StateKey(low: (self.low >> 32) | (UInt64(token) << 32), middle: 0, high: 0)
        }
        var ids = self.ids(size: size)
        ids.removeFirst()
        ids.append(token)
        return StateKey(ids: ids)
    }

    init(ids: [UInt32]) {
        var words: [UInt64] = [0, 0, 0]
        for (index, id) in ids.enumerated() { words[index / 2] |= UInt64(id) << (32 * UInt64(index % 2)) }
        self.init(low: words[0], middle: words[1], high: words[2])
    }

    func ids(size: Int) -> [UInt32] {
        let words = [self.low, self.middle, self.high]
        return (0..<size).map { UInt32(truncatingIfNeeded: words[$0 / 2] >> (32 * UInt64($0 % 2))) }
    }
}

/// One successor of a small state.
struct SmallSuccessor {
    var token: UInt32
    var count: UInt32
    /// The hash of the state it leads to (0 for the end).
    var nextHash: UInt32
}

/// One token of a big state: its entry in the alias blob and its changes since the blob was built.
struct BigToken {
    var offset: UInt32
    var base: UInt32
    var inc: UInt32
    var dec: UInt32
    var nextHash: UInt32
    /// Redis holds a decrements entry for the token.
    var hasDecrements = false

    var count: UInt32 { self.base &+ self.inc &- self.dec }
}

/// A big state: its header, its tokens, and what the next flush appends.
struct BigState {
    var header: ChainLayout.BigHeader
    /// The blob and changes have been read (or written) here.
    var isRead = false
    var areaLength: UInt32 = 0
    var tokens: [UInt32: BigToken] = [:]
    var newEntries: [UInt8] = []
    var newUnits: [UInt8] = []
    var changed: Set<UInt32> = []

    init(header: ChainLayout.BigHeader) { self.header = header }
}

/// One state in the owner's memory.
final class StateNode {
    /// What Redis holds for the state.
    enum Stored { case none, small, big }

    let text: [UInt8]
    let hash: UInt32
    var small: [SmallSuccessor] = []
    var big: BigState?
    var stored = Stored.none
    var isDirty = false
    /// Rebuild the alias blob at the next flush even if the thresholds do not ask for it.
    var rebuildRequested = false

    init(text: [UInt8], hash: UInt32) {
        self.text = text
        self.hash = hash
    }

    var estimatedBytes: Int { 112 + self.text.count }
}
