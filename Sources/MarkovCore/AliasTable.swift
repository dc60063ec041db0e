/// Vose's alias method with exact integer thresholds: with `n` columns over counts summing to `total`, column `i`
/// holds a threshold `t_i <= total` and an alias. A draw picks a column uniformly and `u` uniformly in
/// `[0, total)`: `u < t_i` gives column `i`, otherwise its alias. Every outcome's probability is exactly its count
/// over the total, with no floating point:
/// `P(j) = (t_j + Σ_{alias(i) = j} (total - t_i)) / (n · total) = count_j / total`.
public struct AliasTable: Sendable, Hashable {
    /// The sum of the counts.
    public let total: UInt64
    /// Per column: draws `u < threshold` pick the column itself.
    public let thresholds: [UInt64]
    /// Per column: what draws at or above the threshold pick.
    public let aliases: [Int]

    /// Builds the table of positive counts (zero counts are never drawn). An empty list gives an empty table.
    public init(counts: [UInt64]) {
        let n = counts.count
        let total = counts.reduce(0, +)
        self.total = total
        guard n > 0, total > 0 else {
            self.thresholds = Array(repeating: total, count: n)
            self.aliases = Array(0..<n)
            return
        }
        // Scaled weights: count × n, compared with the total (the average column's weight).
        var weight = counts.map { $0 * UInt64(n) }
        var small: [Int] = []
        var large: [Int] = []
        small.reserveCapacity(n)
        large.reserveCapacity(n)
        for index in 0..<n {
            if weight[index] < total { small.append(index) } else { large.append(index) }
        }
        var thresholds = [UInt64](repeating: total, count: n)
        var aliases = Array(0..<n)
        while let s = small.last, let l = large.last {
            small.removeLast()
            thresholds[s] = weight[s]
            aliases[s] = l
            weight[l] -= total - weight[s]
            if weight[l] < total {
                large.removeLast()
                small.append(l)
            }
        }
        // What is left has weight exactly `total` (integers leave no rounding residue): each column is its own.
        self.thresholds = thresholds
        self.aliases = aliases
    }

    /// The probability mass of each column's outcome, times `n · total` (for tests: it equals `count × n`).
    public func masses() -> [UInt64] {
        var mass = [UInt64](repeating: 0, count: self.thresholds.count)
        for (index, threshold) in self.thresholds.enumerated() {
            mass[index] += threshold
            mass[self.aliases[index]] += self.total - threshold
        }
        return mass
    }
}
