/// Where a Redis server listens: a TCP host and port, or a unix socket path.
public enum RedisEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// A TCP address.
    case tcp(host: String, port: Int)
    /// A unix domain socket.
    case unix(path: String)

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    /// Parses `host:port` (or `[v6]:port`), as `CLUSTER SLOTS`, `MOVED` and `REDIS_CLUSTER_NODES` write it.
    public init?(hostAndPort text: some StringProtocol) {
        let text = text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()
        let trimmed = String(text)
        guard let colon = trimmed.lastIndex(of: ":"), let port = Int(trimmed[trimmed.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(trimmed[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self = .tcp(host: host, port: port)
    }
}
