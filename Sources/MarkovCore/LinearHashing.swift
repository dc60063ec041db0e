/// The shape of a table of bucket hashes that grows one bucket at a time (linear hashing): an item of hash `h` is
/// in bucket `h mod 2^level`, or `h mod 2^(level+1)` when that is below the split pointer. When the items pass
/// ``load`` per bucket, bucket `split` is split into itself and `split + 2^level`, and the pointer advances; so the
/// table never rehashes at once. The Lua functions compute the same bucket (`bucket_of` in ChainLibrary.lua).
public struct LinearHashing: Sendable, Hashable {
    /// Items per bucket (on average) before the table grows. Buckets not yet split in a round hold up to twice
    /// as many, so this stays well below Redis's listpack limit of 64 fields per hash.
    public static let load = 24

    /// `L`: the round.
    public var level: Int
    /// `p`: buckets below it are split in this round.
    public var split: Int

    public init(level: Int = 0, split: Int = 0) {
        self.level = level
        self.split = split
    }

    /// The number of buckets.
    public var buckets: Int { (1 << self.level) + self.split }

    /// The bucket of an item of hash `h`.
    public func bucket(of h: UInt32) -> Int {
        let size = UInt32(1) << UInt32(self.level)
        let bucket = h % size
        if bucket < UInt32(self.split) { return Int(h % (size * 2)) }
        return Int(bucket)
    }

    /// The smallest shape that holds `items` within the load, as a table grown one split at a time would have it.
    public static func shape(for items: Int) -> LinearHashing {
        var shape = LinearHashing()
        while shape.needsSplit(items: items) { _ = shape.advance() }
        return shape
    }

    /// Whether `items` overfill the table.
    public func needsSplit(items: Int) -> Bool {
        items > Self.load * self.buckets
    }

    /// Advances the split pointer; returns the bucket split and the bucket it splits into. Items of the old
    /// bucket whose hash mod 2^(level+1) is not the old bucket's number move to the new one.
    public mutating func advance() -> (from: Int, into: Int) {
        let from = self.split
        let into = self.split + (1 << self.level)
        self.split += 1
        if self.split == 1 << self.level {
            self.level += 1
            self.split = 0
        }
        return (from, into)
    }
}
