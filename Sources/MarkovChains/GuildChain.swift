import CoreMetrics
import MarkovCore
import Redis

/// A partition owner's knowledge of one guild's chain: every state it has read or written, with the counts, the
/// sampling tables and what Redis holds for each, so that a batch is merged per state here and Redis receives
/// finished values (docs/chain-store.md). Owned by one partition task; never shared.
///
/// The owner is the guild's only writer, so what it wrote stays true until it loses the partition. A chain is
/// **complete** when every state of the guild is known here (a guild that was empty when first touched): then a
/// state not known is a new one, and no read is needed before writing. Otherwise states are read on first use.
/// Past the owner's memory bound, states not used lately are forgotten (``evict(toBytes:)``); a chain that began
/// empty keeps a Bloom filter of every state it stored, so that it still knows which states are new.
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
    private var buckets: [[(key: StateKey, node: StateNode)]] = []
    /// Every state this chain stored, for a chain that began complete (absent from it: surely new).
    private var stored: ScalableBloomFilter?
    private var dirty: [(key: StateKey, node: StateNode)] = []
    /// Big states whose blob grew or that have increments since it was built: compacted (rebuilt) when idle.
    private var uncompacted: Set<StateKey> = []
    private var stateBytes = 0
    /// Message records and thread channels written by batches whose writes may still be in flight, with the
    /// batch's number: what the next batch reads from Redis may not show them yet.
    var recentRecords: [String: (record: MessageRecord?, batch: UInt64)] = [:]
    var recentThreads: [String: (channel: String, batch: UInt64)] = [:]
    var recentRestricted: [String: (restricted: Bool, batch: UInt64)] = [:]

    /// The bucket table as the writes known to have landed left it, and as each write still in flight leaves it
    /// (with its batch): a split in flight may not have moved a state yet, so a state is read from every bucket
    /// it passes through, oldest first (``readLocations(text:hash:)``).
    private var landedShape: LinearHashing
    private var shapesInFlight: [(batch: UInt64, shape: LinearHashing)] = []

    /// The writes of batches up to `batch` went through: what they wrote is in Redis now.
    func settled(through batch: UInt64) {
        while let first = self.shapesInFlight.first, first.batch <= batch {
            self.landedShape = first.shape
            self.shapesInFlight.removeFirst()
        }
        if !self.recentRecords.isEmpty { self.recentRecords = self.recentRecords.filter { $0.value.batch > batch } }
        if !self.recentThreads.isEmpty { self.recentThreads = self.recentThreads.filter { $0.value.batch > batch } }
        if !self.recentRestricted.isEmpty { self.recentRestricted = self.recentRestricted.filter { $0.value.batch > batch } }
    }
    /// A rough size of this chain in memory, for the owner's memory bound.
    var bytes: Int { self.stateBytes + (self.stored?.bytes ?? 0) + 16 * self.tokens.count }

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
        self.landedShape = self.shape
        self.wseq = int("wseq")
        self.layout = meta["layout"].flatMap { Int($0) } ?? (int("states") > 0 || int("messages") > 0 ? 1 : ChainLayout.version)
        if let live = meta["applied"].flatMap(StreamID.init) { self.applied[.live] = live }
        if let bulk = meta["applied_bulk"].flatMap(StreamID.init) { self.applied[.bulk] = bulk }
        self.isComplete = self.counters.states == 0
        if self.isComplete { self.stored = ScalableBloomFilter() }
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

    /// The state keys a message passes through in a scope: the start, then one per token (the last is followed by
    /// the end).
    func path(_ tokens: [String], scope: ChainScope = .guild) -> (keys: [StateKey], ids: [UInt32]) {
        var ids: [UInt32] = []
        ids.reserveCapacity(tokens.count)
        for token in tokens { ids.append(self.tokens.id(token)) }
        var key = StateKey.start(scope)
        var keys: [StateKey] = [key]
        keys.reserveCapacity(ids.count + 1)
        for id in ids {
            key = key.shifted(id, size: self.stateSize)
            keys.append(key)
        }
        return (keys, ids)
    }

    /// The text of a state: its scope's marker, then its tokens joined by single spaces.
    func text(of key: StateKey) -> [UInt8] {
        if self.stateSize == 2 {
            let first = self.tokens.utf8(UInt32(truncatingIfNeeded: key.low))
            let second = self.tokens.utf8(UInt32(truncatingIfNeeded: key.low >> 32))
            var text: [UInt8] = []
            text.reserveCapacity(2 + first.count + second.count)
            if key.high != 0 { text += key.scope.marker }
            text += first
            text.append(0x20)
            text += second
            return text
        }
        var text: [UInt8] = key.scope.marker
        for (index, id) in key.ids(size: self.stateSize).enumerated() {
            if index > 0 { text.append(0x20) }
            text += self.tokens.utf8(id)
        }
        return text
    }

    /// Whether the state is known here (read, written, or known to be absent).
    func isKnown(_ key: StateKey) -> Bool {
        self.isComplete || self.states[key] != nil || self.stored?.mayContain(key.fingerprint) == false
    }

    /// Where a state is stored: a bucket hash, or the hash of states whose text passes the listpack limit.
    enum Location: Hashable, Comparable {
        case bucket(Int)
        case long

        /// The key suffix as bytes (`:b:<n>` or `:L`).
        var suffixBytes: [UInt8] {
            switch self {
            case .bucket(let bucket):
                var bytes: [UInt8] = [0x3A, 0x62, 0x3A]
                if bucket == 0 { bytes.append(0x30); return bytes }
                var digits: [UInt8] = []
                var value = bucket
                while value > 0 { digits.append(UInt8(0x30 + value % 10)); value /= 10 }
                return bytes + digits.reversed()
            case .long:
                return Array(ChainKeys.longStatesSuffix.utf8)
            }
        }

        var suffix: String {
            switch self {
            case .bucket(let bucket): ChainKeys.bucketSuffix(bucket)
            case .long: ChainKeys.longStatesSuffix
            }
        }

        var bucket: Int? {
            if case .bucket(let bucket) = self { return bucket }
            return nil
        }

        /// Where a state of this text and hash is stored in a bucket table of this shape.
        static func of(text: [UInt8], hash: UInt32, shape: LinearHashing) -> Location {
            text.count > ChainLayout.listpackLimit ? .long : .bucket(shape.bucket(of: hash))
        }
    }

    /// Where a state of this text and hash is stored.
    func location(text: [UInt8], hash: UInt32) -> Location { .of(text: text, hash: hash, shape: self.shape) }

    /// Where to read a state this chain does not know, while writes may be in flight: the bucket the landed
    /// writes left it in, then each bucket a split in flight moves it to, each with the number of the write that
    /// moves it there (0: landed). Read in that order, one of them holds the state whenever it exists: each split
    /// moves it atomically from one to the next, and nothing else in flight touches a state this chain does not
    /// know.
    func readLocations(text: [UInt8], hash: UInt32) -> [(location: Location, step: Int)] {
        guard text.count <= ChainLayout.listpackLimit else { return [(.long, 0)] }
        var bucket = self.landedShape.bucket(of: hash)
        var locations: [(location: Location, step: Int)] = [(.bucket(bucket), 0)]
        for (index, pending) in self.shapesInFlight.enumerated() {
            let next = pending.shape.bucket(of: hash)
            if next != bucket {
                bucket = next
                locations.append((.bucket(bucket), index + 1))
            }
        }
        return locations
    }

    /// A value to write in a bucket: a small state's successors (encoded in place, of a known size) or bytes.
    enum PendingValue {
        case small(StateNode, size: Int)
        case bytes([UInt8])
    }

    /// One field to write or delete in a bucket hash.
    struct PendingField {
        var location: Location
        var field: [UInt8]
        var value: PendingValue?
    }

    // MARK: The bucket index of complete chains

    private func bucketMembers(_ bucket: Int) -> [(key: StateKey, node: StateNode)] {
        bucket < self.buckets.count ? self.buckets[bucket] : []
    }

    private func setBucketMembers(_ bucket: Int, _ members: [(key: StateKey, node: StateNode)]) {
        while self.buckets.count <= bucket { self.buckets.append([]) }
        self.buckets[bucket] = members
    }

    private func addBucketMember(_ bucket: Int, _ key: StateKey, _ node: StateNode) {
        while self.buckets.count <= bucket { self.buckets.append([]) }
        self.buckets[bucket].append((key, node))
    }

    private func removeBucketMember(_ bucket: Int, _ key: StateKey) {
        guard bucket < self.buckets.count, let index = self.buckets[bucket].firstIndex(where: { $0.key == key }) else { return }
        self.buckets[bucket].swapAt(index, self.buckets[bucket].count - 1)
        self.buckets[bucket].removeLast()
    }

    // MARK: Memory

    /// Forgets states not used since the last eviction (and never a changed one), until the chain's size falls to
    /// `target` bytes or nothing more can go. The chain is no longer complete; its Bloom filter, if it has one,
    /// still tells which states are new.
    func evict(toBytes target: Int) {
        guard self.bytes > target else { return }
        var forgotten = 0
        var freed = 0
        let excess = self.bytes - target
        for (key, node) in self.states where !node.isDirty {
            if node.isUsed {
                node.isUsed = false
                continue
            }
            node.isForgotten = true
            forgotten += 1
            freed += node.bytes
            if !self.uncompacted.isEmpty { self.uncompacted.remove(key) }
            if freed >= excess { break }
        }
        // Removing many keys from a Swift dictionary in its own order is quadratic (each removal shifts the
        // probe run that follows it), so the states kept are copied into a new one instead.
        if forgotten > 0 {
            var kept = [StateKey: StateNode](minimumCapacity: self.states.count - forgotten)
            for (key, node) in self.states where !node.isForgotten { kept[key] = node }
            self.states = kept
        }
        self.stateBytes -= freed
        if forgotten > 0 {
            self.isComplete = false
            self.buckets = []
        }
    }

    /// The size of a small state's value.
    private func smallSize(_ node: StateNode) -> Int {
        var size = 1
        var total: UInt64 = 0
        for successor in node.small {
            size += 4 + self.tokens.length(successor.token) + ChainLayout.count8Size(successor.count)
            total += UInt64(successor.count)
        }
        if node.small.count > 1 { size += total < 255 ? 1 : 5 }
        return total > UInt64(UInt32.max) || node.small.count > 255 ? Int.max : size
    }

    /// Writes a small state's value (``ChainLayout``) into `out`, which has exactly its size.
    private func writeSmall(_ node: StateNode, into out: UnsafeMutableRawBufferPointer) {
        var at = 0
        func byte(_ value: UInt8) { out[at] = value; at += 1 }
        func count8(_ value: UInt32) {
            if value < 255 { byte(UInt8(value)); return }
            byte(255)
            for shift in stride(from: 0, to: 32, by: 8) { byte(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
        }
        byte(UInt8(node.small.count))
        if node.small.count > 1 { count8(node.small.reduce(0) { $0 + $1.count }) }
        for successor in node.small {
            let token = self.tokens.utf8(successor.token)
            byte(UInt8(truncatingIfNeeded: successor.nextHash))
            byte(UInt8(truncatingIfNeeded: successor.nextHash >> 8))
            byte(UInt8(truncatingIfNeeded: successor.nextHash >> 16))
            byte(UInt8(token.count))
            token.withUnsafeBytes { out.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            at += token.count
            count8(successor.count)
        }
    }

    private func node(_ key: StateKey) -> StateNode {
        if let node = self.states[key] {
            node.isUsed = true
            return node
        }
        let node = StateNode(hash: ChainLayout.stateHash(self.text(of: key)))
        self.states[key] = node
        self.stateBytes += StateNode.fixedBytes
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
            throw ChainDataError("state \"\(String(decoding: self.text(of: key), as: UTF8.self))\" of guild \(self.guild) has a value of no known layout")
        }
        self.stateBytes += 12 * node.small.count
    }

    /// The keys of loaded big states whose blob and changes are still to be read.
    func bigStatesToRead(_ keys: [StateKey]) -> [StateKey] {
        keys.filter { self.states[$0]?.big?.isRead == false }
    }

    /// Completes a big state read from Redis with its alias blob and changes since the build.
    func loadBig(_ key: StateKey, _ stored: StoredBigState) throws(ChainDataError) {
        guard let node = self.states[key], let big = node.big else { return }
        let name = String(decoding: self.text(of: key), as: UTF8.self)
        guard let blob = stored.blob, let decoded = ChainLayout.AliasBlob.decode(blob) else {
            throw ChainDataError("big state \"\(name)\" of guild \(self.guild) has no readable alias blob")
        }
        big.areaLength = decoded.areaLength
        var byOffset: [UInt32: UInt32] = [:]
        for entry in decoded.entries {
            let id = self.tokens.id(bytes: entry.token)
            big.tokens[id] = BigToken(offset: entry.offset, base: entry.base, inc: 0, dec: 0, nextHash: entry.nextHash)
            byOffset[entry.offset] = id
        }
        for offset in stored.unitOffsets {
            guard let id = byOffset[offset] else {
                throw ChainDataError("big state \"\(name)\" of guild \(self.guild) has an increment of no token")
            }
            big.tokens[id]!.inc += 1
        }
        for (field, value) in stored.changes {
            guard let change = ChainLayout.AliasBlob.decodeChange(field: field, value: value), let id = byOffset[change.offset] else {
                throw ChainDataError("big state \"\(name)\" of guild \(self.guild) has a malformed decrement")
            }
            big.tokens[id]!.dec = change.decrements
            big.tokens[id]!.hasDecrements = true
        }
        big.isRead = true
        self.stateBytes += 48 * big.tokens.count
    }

    /// Marks the chain complete: every state of the guild has been read (a full load).
    func markComplete() { self.isComplete = true }

    // MARK: Learning

    /// Adds (`delta` 1) or removes (`delta` -1) one message's transitions. Every state on its path must be known
    /// (``isKnown(_:)``). Returns the transitions changed.
    @discardableResult
    func learn(_ tokens: [String], delta: Int32, scope: ChainScope = .guild) -> Int {
        guard !tokens.isEmpty else { return 0 }
        let (keys, ids) = self.path(tokens, scope: scope)
        var nodes: [StateNode] = []
        nodes.reserveCapacity(keys.count)
        for key in keys { nodes.append(self.node(key)) }
        for index in 0..<keys.count {
            let token = index < ids.count ? ids[index] : 0
            let nextHash = index < ids.count ? nodes[index + 1].hash : 0
            let node = nodes[index]
            if !node.isDirty {
                node.isDirty = true
                self.dirty.append((keys[index], node))
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
            self.stateBytes += 12
        }
    }

    private func applyBig(_ node: StateNode, token: UInt32, delta: Int32, nextHash: UInt32) {
        guard let big = node.big else { return }
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
            self.stateBytes += 48
        }
    }

    // MARK: Writing

    /// Appends the writes of every state changed since the last flush (and the bucket splits the new states
    /// call for) to `write`, and forgets the changes: the caller sends `write`, as part of batch `batch`, and
    /// drops this chain if it fails.
    func flush(into write: inout ChainWrite, batch: UInt64) {
        let dirty = self.dirty
        self.dirty = []
        // States after this flush, to grow the bucket table first: splits move what Redis holds now, then every
        // changed state is written where the grown table puts it.
        var states = self.counters.states
        for (_, node) in dirty {
            let live = node.big.map { $0.header.live > 0 } ?? node.small.contains { $0.count > 0 }
            if node.stored == .none && live { states += 1 }
            if node.stored != .none && !live { states -= 1 }
        }
        while self.shape.needsSplit(items: states) {
            let modulus = 1 << (self.shape.level + 1)
            let (from, into) = self.shape.advance()
            if self.isComplete {
                var staying: [(key: StateKey, node: StateNode)] = []
                var moving: [(key: StateKey, node: StateNode)] = []
                for member in self.bucketMembers(from) {
                    if self.shape.bucket(of: member.node.hash) == into { moving.append(member) } else { staying.append(member) }
                }
                self.setBucketMembers(from, staying)
                self.setBucketMembers(into, moving)
                // A changed state is written in its new bucket below; an unchanged one moves with its value.
                var values: [(field: [UInt8], value: [UInt8])] = []
                var texts: [[UInt8]] = []
                for member in moving {
                    let text = self.text(of: member.key)
                    texts.append(text)
                    if !member.node.isDirty, let value = self.storedValue(member.node) { values.append((text, value)) }
                }
                write.move(from: ChainKeys.bucketSuffix(from), into: ChainKeys.bucketSuffix(into), fields: texts, values: values)
            } else {
                write.split(from: ChainKeys.bucketSuffix(from), into: ChainKeys.bucketSuffix(into), modulus: modulus, target: into)
            }
        }
        if self.shape != (self.shapesInFlight.last?.shape ?? self.landedShape) { self.shapesInFlight.append((batch, self.shape)) }
        var fields: [PendingField] = []
        fields.reserveCapacity(dirty.count)
        var bigAdded: [[UInt8]] = []
        var bigRemoved: [[UInt8]] = []
        for (key, node) in dirty {
            node.isDirty = false
            let text = self.text(of: key)
            let location = self.location(text: text, hash: node.hash)
            let bucket = location.bucket
            let wasStored = node.stored != .none
            if node.big != nil {
                self.flushBig(node, text: text, location: location, write: &write, fields: &fields, removed: &bigRemoved)
                if node.big == nil { self.uncompacted.remove(key) }
            } else {
                if node.small.contains(where: { $0.count == 0 }) { node.small.removeAll { $0.count == 0 } }
                let size = node.small.isEmpty ? 0 : self.smallSize(node)
                if node.small.isEmpty {
                    if wasStored { fields.append(PendingField(location: location, field: text, value: nil)) }
                    node.stored = .none
                } else if size <= ChainLayout.listpackLimit {
                    fields.append(PendingField(location: location, field: text, value: .small(node, size: size)))
                    node.stored = .small
                } else {
                    let successors = node.small.map {
                        ChainLayout.Successor(token: self.tokens.utf8($0.token), nextHash: $0.nextHash, count: $0.count)
                    }
                    self.promote(node, text: text, successors: successors, location: location, write: &write, fields: &fields)
                    bigAdded.append(text)
                }
            }
            let isStored = node.stored != .none
            if isStored && !wasStored {
                self.counters.states += 1
                self.stored?.insert(key.fingerprint)
                if self.isComplete, let bucket { self.addBucketMember(bucket, key, node) }
            } else if !isStored && wasStored {
                self.counters.states -= 1
                if self.isComplete, let bucket { self.removeBucketMember(bucket, key) }
            }
            if !isStored && self.isComplete {
                // A complete chain knows an unknown state is absent: no need to keep it.
                self.stateBytes -= node.bytes
                self.states[key] = nil
            }
        }
        // Splits first (above), then deletions, then values: a state moved by a split is deleted or rewritten in
        // its new bucket.
        // One HDEL and one HSET per bucket touched: order the fields by bucket, deletions first.
        let order = fields.indices.sorted { a, b in
            let (la, lb) = (fields[a].location, fields[b].location)
            if la != lb { return la < lb }
            return (fields[a].value == nil ? 0 : 1, a) < (fields[b].value == nil ? 0 : 1, b)
        }
        var start = 0
        while start < order.count {
            let location = fields[order[start]].location
            var end = start
            while end < order.count && fields[order[end]].location == location { end += 1 }
            let suffix = location.suffixBytes
            var firstValue = start
            while firstValue < end && fields[order[firstValue]].value == nil { firstValue += 1 }
            if firstValue > start { write.hdel(suffix: suffix, order[start..<firstValue].map { fields[$0].field }) }
            if end > firstValue {
                write.hset(suffix: suffix, count: end - firstValue) { builder in
                    for index in order[firstValue..<end] {
                        builder.append(fields[index].field)
                        switch fields[index].value {
                        case .small(let node, let size)?:
                            builder.append(length: size) { self.writeSmall(node, into: $0) }
                        case .bytes(let bytes)?:
                            builder.append(bytes)
                        case nil:
                            break
                        }
                    }
                }
            }
            start = end
        }
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
        _ node: StateNode, text: [UInt8], successors: [ChainLayout.Successor], location: Location, write: inout ChainWrite,
        fields: inout [PendingField]
    ) {
        let built = ChainLayout.AliasBlob.build(successors)
        let big = BigState(header: ChainLayout.BigHeader(
            total: UInt32(successors.reduce(0) { $0 + $1.count }), columns: UInt32(successors.count), pending: 0,
            decrements: 0, live: UInt32(successors.count)
        ))
        big.isRead = true
        big.areaLength = built.areaLength
        for (index, successor) in node.small.enumerated() {
            big.tokens[successor.token] = BigToken(offset: built.offsets[index], base: successor.count, inc: 0, dec: 0, nextHash: successor.nextHash)
        }
        write.set(":x:", text, built.blob)
        // Whatever this owner believes Redis holds, a new blob starts with no pending units or decrements: a
        // list left from an earlier blob would point into this one.
        write.unlink([Array(":u:".utf8) + text, Array(":d:".utf8) + text])
        fields.append(PendingField(location: location, field: text, value: .bytes(big.header.encoded)))
        self.counters.rebuilds += 1
        TrainerMetrics.aliasRebuilds.increment()
        self.stateBytes += 48 * node.small.count
        node.small = []
        node.big = big
        node.stored = .big
    }

    private func flushBig(
        _ node: StateNode, text: [UInt8], location: Location, write: inout ChainWrite,
        fields: inout [PendingField], removed: inout [[UInt8]]
    ) {
        guard let big = node.big else { return }
        if big.header.live == 0 {
            if node.stored != .none {
                write.unlink([Array(":x:".utf8) + text, Array(":u:".utf8) + text, Array(":d:".utf8) + text])
                fields.append(PendingField(location: location, field: text, value: nil))
                removed.append(text)
            }
            self.stateBytes -= 48 * big.tokens.count
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
            self.stateBytes -= 48 * big.tokens.count
            self.promote(node, text: text, successors: successors, location: location, write: &write, fields: &fields)
            return
        }
        if !big.newEntries.isEmpty { write.append(":x:", text, big.newEntries) }
        if !big.newUnits.isEmpty { write.append(":u:", text, big.newUnits) }
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
            if !cleared.isEmpty { write.hdel(":d:", text, cleared) }
            if !pairs.isEmpty { write.hset(":d:", text, pairs) }
        }
        fields.append(PendingField(location: location, field: text, value: .bytes(big.header.encoded)))
        big.newEntries = []
        big.newUnits = []
        big.changed = []
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
                self.dirty.append((key, node))
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

/// What Redis holds for a big state besides its header: the alias blob, the increments (units) and the
/// decrements, read with ``commands(keys:text:)`` in one pipeline and taken from its three replies.
struct StoredBigState {
    var blob: [UInt8]?
    var units: [UInt8]
    var changes: [([UInt8], [UInt8])]

    static func commands(keys: ChainKeys, text: [UInt8]) -> [RedisCommand] {
        [
            RedisCommand("GET", .string(keys.key(ChainKeys.aliasSuffix(text)))),
            RedisCommand("GET", .string(keys.key(ChainKeys.pendingSuffix(text)))),
            RedisCommand("HGETALL", .string(keys.key(ChainKeys.changesSuffix(text)))),
        ]
    }

    /// The state read from the replies of its three commands, starting at `start`.
    init(_ replies: [Result<RedisReply, RedisError>], at start: Int) throws(RedisError) {
        self.blob = try replies[start].get().bytes
        self.units = try replies[start + 1].get().bytes ?? []
        let flat = try replies[start + 2].get().array ?? []
        self.changes = stride(from: 0, to: flat.count - 1, by: 2).map { (flat[$0].bytes ?? [], flat[$0 + 1].bytes ?? []) }
    }

    /// The entry offset of each unit of increment.
    var unitOffsets: [UInt32] {
        stride(from: 0, to: self.units.count - 3, by: 4).map { start in
            UInt32(self.units[start]) | UInt32(self.units[start + 1]) << 8 | UInt32(self.units[start + 2]) << 16
                | UInt32(self.units[start + 3]) << 24
        }
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
    private var lengths: [Int] = [0]
    private var ids: [String: UInt32] = ["": 0]

    var count: Int { self.texts.count }

    mutating func id(_ token: String) -> UInt32 {
        if let id = self.ids[token] { return id }
        let id = UInt32(self.texts.count)
        self.texts.append(token)
        self.bytes.append(Array(token.utf8))
        self.lengths.append(token.utf8.count)
        self.ids[token] = id
        return id
    }

    mutating func id(bytes: [UInt8]) -> UInt32 { self.id(String(decoding: bytes, as: UTF8.self)) }

    func text(_ id: UInt32) -> String { self.texts[Int(id)] }
    func utf8(_ id: UInt32) -> [UInt8] { self.bytes[Int(id)] }
    func length(_ id: UInt32) -> Int { self.lengths[Int(id)] }
}

/// A state as its token ids (up to six, 32 bits each) and its scope: the key of the owner's dictionaries. The top
/// bit of `high` marks the age-restricted scope (``ChainScope``); token ids stay below 2^31.
struct StateKey: Hashable, Sendable {
    var low: UInt64
    var middle: UInt64
    var high: UInt64

    /// The bit of `high` that marks a state of the age-restricted scope.
    static let restrictedBit: UInt64 = 1 << 63

    /// The start of a message: all empty tokens.
    static let start = StateKey(low: 0, middle: 0, high: 0)

    /// The start of a message in a scope.
    static func start(_ scope: ChainScope) -> StateKey {
        scope == .guild ? .start : StateKey(low: 0, middle: 0, high: Self.restrictedBit)
    }

    /// The state's scope.
    var scope: ChainScope { self.high & Self.restrictedBit == 0 ? .guild : .ageRestricted }

    init(low: UInt64, middle: UInt64, high: UInt64) {
        self.low = low
        self.middle = middle
        self.high = high
    }

    /// The state without its first token, with `token` appended (tokens are 32-bit slots, the first lowest).
    @inline(__always)
    func shifted(_ token: UInt32, size: Int) -> StateKey {
        let scope = self.high & Self.restrictedBit
        if size <= 2 {
            if size == 1 { return StateKey(low: UInt64(token), middle: 0, high: scope) }
            return StateKey(low: (self.low >> 32) | (UInt64(token) << 32), middle: 0, high: scope)
        }
        var ids = self.ids(size: size)
        ids.removeFirst()
        ids.append(token)
        var key = StateKey(ids: ids)
        key.high |= scope
        return key
    }

    init(ids: [UInt32]) {
        var words: [UInt64] = [0, 0, 0]
        for (index, id) in ids.enumerated() { words[index / 2] |= UInt64(id) << (32 * UInt64(index % 2)) }
        self.init(low: words[0], middle: words[1], high: words[2])
    }

    func ids(size: Int) -> [UInt32] {
        let words = [self.low, self.middle, self.high & ~Self.restrictedBit]
        return (0..<size).map { UInt32(truncatingIfNeeded: words[$0 / 2] >> (32 * UInt64($0 % 2))) }
    }

    /// A 64-bit mix of the key, for Bloom filters.
    var fingerprint: UInt64 {
        var z = self.low &+ 0x9E37_79B9_7F4A_7C15 &* (self.middle &+ 1) ^ (self.high &* 0xC2B2_AE3D_27D4_EB4F)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A Bloom filter that grows: a list of filters of doubling capacity, each sized for a 1 % false-positive rate;
/// an item is added to the newest and looked for in all. Answers "surely absent" or "maybe present".
struct ScalableBloomFilter {
    private var layers: [(bits: [UInt64], capacity: Int, count: Int)] = []

    init() { self.addLayer(capacity: 1 << 14) }

    private mutating func addLayer(capacity: Int) {
        // About 9.6 bits per item for 1 %, with 7 probes; a power of two of words.
        var words = 1
        while words * 64 < capacity * 10 { words <<= 1 }
        self.layers.append(([UInt64](repeating: 0, count: words), capacity, 0))
    }

    private static func probes(_ fingerprint: UInt64, words: Int) -> [(word: Int, bit: UInt64)] {
        let h1 = fingerprint
        let h2 = (fingerprint >> 32) | 1
        let bits = UInt64(words * 64)
        return (0..<7).map { index in
            let bit = (h1 &+ UInt64(index) &* h2) % bits
            return (Int(bit / 64), 1 << (bit % 64))
        }
    }

    mutating func insert(_ fingerprint: UInt64) {
        if self.layers[self.layers.count - 1].count >= self.layers[self.layers.count - 1].capacity {
            self.addLayer(capacity: self.layers[self.layers.count - 1].capacity * 2)
        }
        let last = self.layers.count - 1
        for probe in Self.probes(fingerprint, words: self.layers[last].bits.count) {
            self.layers[last].bits[probe.word] |= probe.bit
        }
        self.layers[last].count += 1
    }

    func mayContain(_ fingerprint: UInt64) -> Bool {
        self.layers.contains { layer in
            Self.probes(fingerprint, words: layer.bits.count).allSatisfy { layer.bits[$0.word] & $0.bit != 0 }
        }
    }

    /// The filter's own memory, in bytes.
    var bytes: Int { self.layers.reduce(0) { $0 + 8 * $1.bits.count } }
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
final class BigState {
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

/// One state in the owner's memory (its text is made from its key when needed, not kept).
final class StateNode {
    /// What Redis holds for the state.
    enum Stored: UInt8 { case none, small, big }

    let hash: UInt32
    var stored = Stored.none
    var isDirty = false
    /// Used since the last eviction pass.
    var isUsed = true
    /// Chosen by an eviction pass, about to leave the chain.
    var isForgotten = false
    /// Rebuild the alias blob at the next flush even if the thresholds do not ask for it.
    var rebuildRequested = false
    var small: [SmallSuccessor] = []
    var big: BigState?

    init(hash: UInt32) { self.hash = hash }

    /// About what a state costs here: the object, its dictionary entry, its successor array.
    static let fixedBytes = 120
    var bytes: Int { Self.fixedBytes + 12 * self.small.count + (self.big.map { 64 + 48 * $0.tokens.count } ?? 0) }
}
