/// The byte layout of a guild's chain in Redis (layout 2, docs/chain-store.md), encoded and decoded here for the
/// trainers, which write every value, and mirrored by the reading functions in ChainLibrary.lua. All integers are
/// little endian.
///
/// - A state is its tokens joined by single spaces (the start of a message pads with empty tokens); its hash is the
///   first 24 bits of SHA-1 of that text.
/// - A **small** state's value, in a bucket hash: `u8 n`, the total as a ``count8`` when `n > 1`, then per successor
///   `[u24 hash of the next state][u8 token length][token][count8]`.
/// - A **big** state's value is a header (``BigHeader``); its successors are in an alias blob (``AliasBlob``), with
///   increments and changes since the blob was built kept beside it.
public enum ChainLayout {
    /// The layout version stored in a guild's meta (`layout`).
    public static let version = 2
    /// Fields and values up to this many bytes keep a bucket hash in Redis's compact listpack encoding.
    public static let listpackLimit = 64
    /// Tokens longer than this are not learnt (lengths are u16 in alias blobs; Discord's messages are far shorter).
    public static let maxTokenLength = 16_384

    /// The hash of a state's text: the first 24 bits of SHA-1.
    public static func stateHash(_ text: some Collection<UInt8>) -> UInt32 { SHA1.prefix24(text) }

    /// One successor of a state as stored.
    public struct Successor: Sendable, Hashable {
        public var token: [UInt8]
        /// The hash of the state the successor leads to (0 for the end).
        public var nextHash: UInt32
        public var count: UInt32
        public init(token: [UInt8], nextHash: UInt32, count: UInt32) {
            self.token = token
            self.nextHash = nextHash
            self.count = count
        }
    }

    /// A value read from a bucket hash.
    public enum StateValue: Sendable, Hashable {
        case small([Successor])
        case big(BigHeader)
    }

    // MARK: count8

    /// A count in one byte below 255, else 255 and a u32.
    @inlinable
    public static func appendCount8(_ value: UInt32, to bytes: inout [UInt8]) {
        if value < 255 {
            bytes.append(UInt8(value))
        } else {
            bytes.append(255)
            appendU32(value, to: &bytes)
        }
    }

    @inlinable
    public static func count8Size(_ value: UInt32) -> Int { value < 255 ? 1 : 5 }

    @inlinable
    public static func appendU32(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 24))
    }

    @inlinable
    public static func appendU24(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16))
    }

    @inlinable
    public static func appendU16(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    static func u32(_ bytes: some RandomAccessCollection<UInt8>, _ at: Int) -> UInt32? {
        guard at >= 0, at + 4 <= bytes.count else { return nil }
        let base = bytes.index(bytes.startIndex, offsetBy: at)
        return (0..<4).reduce(0) { $0 | UInt32(bytes[bytes.index(base, offsetBy: $1)]) << (8 * UInt32($1)) }
    }

    static func u24(_ bytes: some RandomAccessCollection<UInt8>, _ at: Int) -> UInt32? {
        guard at >= 0, at + 3 <= bytes.count else { return nil }
        let base = bytes.index(bytes.startIndex, offsetBy: at)
        return (0..<3).reduce(0) { $0 | UInt32(bytes[bytes.index(base, offsetBy: $1)]) << (8 * UInt32($1)) }
    }

    static func u16(_ bytes: some RandomAccessCollection<UInt8>, _ at: Int) -> UInt32? {
        guard at >= 0, at + 2 <= bytes.count else { return nil }
        let base = bytes.index(bytes.startIndex, offsetBy: at)
        return UInt32(bytes[base]) | UInt32(bytes[bytes.index(after: base)]) << 8
    }

    static func count8(_ bytes: [UInt8], _ at: Int) -> (value: UInt32, next: Int)? {
        guard at < bytes.count else { return nil }
        if bytes[at] < 255 { return (UInt32(bytes[at]), at + 1) }
        guard let value = u32(bytes, at + 1) else { return nil }
        return (value, at + 5)
    }

    // MARK: Small states

    /// The size of a small state's value with these successors (to decide whether it stays small).
    public static func smallSize(tokenLengths: some Sequence<Int>, counts: some Sequence<UInt32>) -> Int {
        var size = 1
        var n = 0
        var total: UInt64 = 0
        for length in tokenLengths { size += 4 + length; n += 1 }
        for count in counts { size += count8Size(count); total += UInt64(count) }
        if n > 1 { size += total < 255 ? 1 : 5 }
        return size
    }

    /// Encodes a small state's value; `nil` when it cannot be small (no successors, more than 255, a token over
    /// 255 bytes, or a total past u32).
    public static func encodeSmall(_ successors: [Successor]) -> [UInt8]? {
        guard !successors.isEmpty, successors.count <= 255 else { return nil }
        var total: UInt64 = 0
        for successor in successors { total += UInt64(successor.count) }
        guard total <= UInt64(UInt32.max) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16 * successors.count)
        bytes.append(UInt8(successors.count))
        if successors.count > 1 { appendCount8(UInt32(total), to: &bytes) }
        for successor in successors {
            guard successor.token.count <= 255 else { return nil }
            appendU24(successor.nextHash, to: &bytes)
            bytes.append(UInt8(successor.token.count))
            bytes += successor.token
            appendCount8(successor.count, to: &bytes)
        }
        return bytes
    }

    /// Reads a value of a bucket hash; `nil` when it is not layout 2.
    public static func decodeState(_ bytes: [UInt8]) -> StateValue? {
        guard let first = bytes.first else { return nil }
        if first == 0 { return BigHeader(bytes).map(StateValue.big) }
        let n = Int(first)
        var position = 1
        if n > 1 {
            guard let (_, next) = count8(bytes, position) else { return nil }
            position = next
        }
        var successors: [Successor] = []
        successors.reserveCapacity(n)
        for _ in 0..<n {
            guard let hash = u24(bytes, position), position + 3 < bytes.count else { return nil }
            let length = Int(bytes[position + 3])
            let start = position + 4
            guard start + length <= bytes.count, let (count, next) = count8(bytes, start + length) else { return nil }
            successors.append(Successor(token: Array(bytes[start..<(start + length)]), nextHash: hash, count: count))
            position = next
        }
        return position == bytes.count ? .small(successors) : nil
    }

    // MARK: Big states

    /// A big state's value in its bucket: `u8 0`, then u32 `total` (of the alias blob), `columns`, `pending`
    /// (increments since the blob was built), `decrements` (since then) and `live` (successors with a count).
    public struct BigHeader: Sendable, Hashable {
        public var total: UInt32
        public var columns: UInt32
        public var pending: UInt32
        public var decrements: UInt32
        public var live: UInt32

        public init(total: UInt32, columns: UInt32, pending: UInt32, decrements: UInt32, live: UInt32) {
            self.total = total
            self.columns = columns
            self.pending = pending
            self.decrements = decrements
            self.live = live
        }

        public init?(_ bytes: [UInt8]) {
            guard bytes.count == 21, bytes[0] == 0, let total = u32(bytes, 1), let columns = u32(bytes, 5),
                  let pending = u32(bytes, 9), let decrements = u32(bytes, 13), let live = u32(bytes, 17)
            else { return nil }
            self.init(total: total, columns: columns, pending: pending, decrements: decrements, live: live)
        }

        public var encoded: [UInt8] {
            var bytes: [UInt8] = [0]
            bytes.reserveCapacity(21)
            for value in [self.total, self.columns, self.pending, self.decrements, self.live] { appendU32(value, to: &bytes) }
            return bytes
        }
    }

    /// A big state's alias blob (`{g}:x:<state>`): u32 total, u32 columns, 12-byte columns
    /// `[u32 threshold][u32 entry offset][u32 alias's entry offset]`, then token entries
    /// `[u16 length][u24 hash of the next state][u32 base count][token]`; offsets count from the first entry.
    /// Entries of tokens new since the build are appended at the end.
    public enum AliasBlob {
        /// The size of an entry's fixed part.
        public static let entryHeader = 9

        /// One token entry.
        public static func entry(token: [UInt8], nextHash: UInt32, base: UInt32) -> [UInt8] {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(entryHeader + token.count)
            appendU16(UInt32(token.count), to: &bytes)
            appendU24(nextHash, to: &bytes)
            appendU32(base, to: &bytes)
            return bytes + token
        }

        /// Builds the blob of successors with positive counts (summing to at most u32); returns it, each
        /// successor's entry offset, and the length of the entry area.
        public static func build(_ successors: [Successor]) -> (blob: [UInt8], offsets: [UInt32], areaLength: UInt32) {
            let table = AliasTable(counts: successors.map { UInt64($0.count) })
            var offsets: [UInt32] = []
            offsets.reserveCapacity(successors.count)
            var area: UInt32 = 0
            for successor in successors {
                offsets.append(area)
                area += UInt32(entryHeader + successor.token.count)
            }
            var blob: [UInt8] = []
            blob.reserveCapacity(8 + 12 * successors.count + Int(area))
            appendU32(UInt32(table.total), to: &blob)
            appendU32(UInt32(successors.count), to: &blob)
            for index in successors.indices {
                appendU32(UInt32(table.thresholds[index]), to: &blob)
                appendU32(offsets[index], to: &blob)
                appendU32(offsets[table.aliases[index]], to: &blob)
            }
            for successor in successors {
                blob += entry(token: successor.token, nextHash: successor.nextHash, base: successor.count)
            }
            return (blob, offsets, area)
        }

        /// One entry as read back from a blob.
        public struct Entry: Sendable, Hashable {
            public var offset: UInt32
            public var token: [UInt8]
            public var nextHash: UInt32
            public var base: UInt32
        }

        /// The total, the column count and the entries of a blob; `nil` when it is malformed.
        public static func decode(_ blob: [UInt8]) -> (total: UInt32, columns: UInt32, entries: [Entry], areaLength: UInt32)? {
            guard let total = u32(blob, 0), let columns = u32(blob, 4) else { return nil }
            let area = 8 + 12 * Int(columns)
            guard area <= blob.count else { return nil }
            var entries: [Entry] = []
            var position = area
            while position < blob.count {
                guard let length = u16(blob, position), let hash = u24(blob, position + 2), let base = u32(blob, position + 5)
                else { return nil }
                let start = position + entryHeader
                guard start + Int(length) <= blob.count else { return nil }
                entries.append(Entry(offset: UInt32(position - area), token: Array(blob[start..<(start + Int(length))]), nextHash: hash, base: base))
                position = start + Int(length)
            }
            return (total, columns, entries, UInt32(blob.count - area))
        }

        /// A unit of `{g}:u:<state>`: the entry offset of one increment.
        public static func unit(_ offset: UInt32) -> [UInt8] {
            var bytes: [UInt8] = []
            appendU32(offset, to: &bytes)
            return bytes
        }

        /// A field of `{g}:d:<state>`: an entry offset.
        public static func changeField(_ offset: UInt32) -> [UInt8] { unit(offset) }

        /// A value of `{g}:d:<state>`: the token's decrements since the build and its weight (base + increments);
        /// its count is weight - decrements.
        public static func changeValue(decrements: UInt32, weight: UInt32) -> [UInt8] {
            var bytes: [UInt8] = []
            appendU32(decrements, to: &bytes)
            appendU32(weight, to: &bytes)
            return bytes
        }

        /// Reads a field and value of `{g}:d:<state>`.
        public static func decodeChange(field: [UInt8], value: [UInt8]) -> (offset: UInt32, decrements: UInt32, weight: UInt32)? {
            guard field.count == 4, value.count == 8, let offset = u32(field, 0), let decrements = u32(value, 0),
                  let weight = u32(value, 4)
            else { return nil }
            return (offset, decrements, weight)
        }
    }
}
