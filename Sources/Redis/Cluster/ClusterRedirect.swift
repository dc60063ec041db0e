/// What a cluster client does with an error reply: the pure decision behind `MOVED`, `ASK`, `TRYAGAIN`,
/// `CLUSTERDOWN` and `LOADING`, kept apart from I/O so each case is tested alone.
public enum ClusterRedirect: Sendable, Equatable {
    /// The slot has a new owner for good: update the slot map, refresh it soon, and resend there.
    case moved(slot: UInt16, to: RedisEndpoint)
    /// The slot is migrating and this key is already on the target: send `ASKING` then the command there, once.
    case ask(slot: UInt16, to: RedisEndpoint)
    /// The cluster is busy (resharding, failing over, loading): wait with backoff, then resend.
    case retryLater
    /// The error is the command's own answer: hand it to the caller.
    case none

    /// Classifies an error reply's text. `node` is the node that answered; it stands in for the host when the
    /// redirect names only a port (`MOVED 3999 :6381`, sent when the target's address is unknown).
    public init(errorReply message: String, from node: RedisEndpoint? = nil) {
        let words = message.split(separator: " ", omittingEmptySubsequences: true)
        guard let prefix = words.first else {
            self = .none
            return
        }
        switch prefix {
        case "MOVED", "ASK":
            guard words.count >= 3, let slot = UInt16(words[1]), Int(slot) < HashSlot.count,
                let endpoint = Self.endpoint(words[2], from: node)
            else {
                self = .none
                return
            }
            self = prefix == "MOVED" ? .moved(slot: slot, to: endpoint) : .ask(slot: slot, to: endpoint)
        case "TRYAGAIN", "CLUSTERDOWN", "LOADING":
            self = .retryLater
        default:
            self = .none
        }
    }

    private static func endpoint(_ text: Substring, from node: RedisEndpoint?) -> RedisEndpoint? {
        if text.hasPrefix(":"), case .tcp(let host, _)? = node {
            return RedisEndpoint(hostAndPort: host + text)
        }
        return RedisEndpoint(hostAndPort: text)
    }
}
