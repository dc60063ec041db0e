/// Discord's send budget: at most `limit` payloads per `window` per connection, heartbeats included; over it the
/// server closes with 4008. A sliding window over the send times; pure (the caller passes the clock).
public struct SendBudget: Sendable {
    public let limit: Int
    public let window: Duration
    /// Send times inside the current window, oldest first.
    private var sent: [ContinuousClock.Instant] = []

    /// The gateway's budget is 120 per 60 s.
    public init(limit: Int = 120, window: Duration = .seconds(60)) {
        precondition(limit > 0)
        self.limit = limit
        self.window = window
    }

    /// How long to wait before the next send; `.zero` means send now (and the send is counted).
    public mutating func reserve(at now: ContinuousClock.Instant) -> Duration {
        self.sent.removeAll { now - $0 >= self.window }
        if self.sent.count < self.limit {
            self.sent.append(now)
            return .zero
        }
        return self.sent[0] + self.window - now
    }
}

/// Which shards a gateway process holds.
public enum ShardSelection: Sendable, Hashable {
    /// Parses `0-3`, `5` or `0,2,4-6`.
    public static func parse(_ text: String) throws(ShardSelectionError) -> [Int] {
        var shards: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard let low = Int(bounds[0].trimmingPrefixSpaces()), low >= 0 else { throw .init("bad shard range \(part)") }
            let high = bounds.count == 2 ? Int(bounds[1].trimmingPrefixSpaces()) : low
            guard bounds.count <= 2, let high, high >= low else { throw .init("bad shard range \(part)") }
            shards += Array(low...high)
        }
        guard !shards.isEmpty else { throw .init("no shards in \(text)") }
        return Array(Set(shards)).sorted()
    }

    /// The shards of one StatefulSet pod: ordinal `k` (from a hostname like `gateway-2`) holds
    /// `k×perPod ..< (k+1)×perPod`.
    public static func forPod(hostname: String, perPod: Int) throws(ShardSelectionError) -> [Int] {
        guard perPod > 0 else { throw .init("--shards-per-pod must be positive") }
        guard let dash = hostname.lastIndex(of: "-"), let ordinal = Int(hostname[hostname.index(after: dash)...]),
              ordinal >= 0
        else { throw .init("hostname \(hostname) does not end in a StatefulSet ordinal (like gateway-2)") }
        return Array(ordinal * perPod..<(ordinal + 1) * perPod)
    }
}

/// A shard selection that cannot be used.
public struct ShardSelectionError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension Substring {
    fileprivate func trimmingPrefixSpaces() -> Substring {
        var text = self
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return text
    }
}
