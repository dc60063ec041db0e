/// How to reach Redis and how patiently: endpoints, credentials, database, pool size and deadlines.
///
/// Made from a URL (`redis://[[user]:password@]host[:port][/db]` or `unix:///path[?db=N]`) for one server, or
/// from comma-separated `host:port` seeds for a Redis Cluster. The password is a secret: it never appears in
/// ``description`` or in any error.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    /// The server (standalone) or the seed nodes (cluster).
    public var endpoints: [RedisEndpoint]
    /// Whether the endpoints are Redis Cluster seeds.
    public var isCluster: Bool
    /// ACL user name for `AUTH`, if any.
    public var username: String?
    /// Password for `AUTH`, if any. Secret.
    public var password: String?
    /// Database selected after connecting (standalone only; a cluster has only database 0).
    public var database: Int
    /// Multiplexed connections kept per node; blocking commands use extra, dedicated connections.
    public var connectionsPerNode: Int = 2
    /// Deadline of one command or pipeline, from the moment it is written.
    public var commandTimeout: Duration = .seconds(5)
    /// Deadline for opening a connection (TCP connect plus `AUTH`/`SELECT`).
    public var connectTimeout: Duration = .seconds(3)
    /// Added to a blocking command's own block time to make its socket deadline.
    public var blockingMargin: Duration = .seconds(2)
    /// Backoff between reconnect attempts to one node.
    public var reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .seconds(2))
    /// How many MOVED/ASK redirects and TRYAGAIN/CLUSTERDOWN/LOADING retries one command may take.
    public var maxRedirects: Int = 16
    /// Backoff between cluster retries (TRYAGAIN, CLUSTERDOWN, LOADING).
    public var clusterRetryBackoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(500))

    /// A standalone server with no credentials.
    public init(endpoint: RedisEndpoint, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.endpoints = [endpoint]
        self.isCluster = false
        self.username = username
        self.password = password
        self.database = database
    }

    /// A standalone server from a `redis://` or `unix://` URL.
    public init(url: String) throws(RedisError) {
        func invalid(_ why: String) -> RedisError {
            RedisError(.invalidConfiguration, "REDIS_URL is not a Redis URL (\(why)); expected "
                + "redis://[:password@]host:port[/db] or unix:///path")
        }
        if url.hasPrefix("unix://") {
            var path = Substring(url.dropFirst("unix://".count))
            var database = 0
            if let query = path.firstIndex(of: "?") {
                for pair in path[path.index(after: query)...].split(separator: "&") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2, parts[0] == "db" {
                        guard let value = Int(parts[1]), value >= 0 else { throw invalid("db is not a number") }
                        database = value
                    }
                }
                path = path[..<query]
            }
            guard path.hasPrefix("/") else { throw invalid("a unix socket path must be absolute") }
            self.init(endpoint: .unix(path: String(path)), database: database)
            return
        }
        guard url.hasPrefix("redis://") else { throw invalid("the scheme must be redis:// or unix://") }
        var rest = Substring(url.dropFirst("redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : Self.percentDecoded(user)
                password = Self.percentDecoded(credentials[credentials.index(after: colon)...])
            } else if !credentials.isEmpty {
                password = Self.percentDecoded(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let value = Int(db), value >= 0 else { throw invalid("the database is not a number") }
                database = value
            }
            rest = rest[..<slash]
        }
        let endpoint: RedisEndpoint
        if rest.contains(":") && !(rest.hasPrefix("[") && rest.hasSuffix("]")) {
            guard let parsed = RedisEndpoint(hostAndPort: rest) else { throw invalid("the port is not valid") }
            endpoint = parsed
        } else {
            var host = String(rest)
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty else { throw invalid("the host is missing") }
            endpoint = .tcp(host: host, port: 6379)
        }
        self.init(endpoint: endpoint, username: username, password: password, database: database)
    }

    /// A Redis Cluster from comma-separated `host:port` seeds; credentials may come from a URL.
    public init(clusterNodes: String, username: String? = nil, password: String? = nil) throws(RedisError) {
        var seeds: [RedisEndpoint] = []
        for item in clusterNodes.split(separator: ",") where !item.allSatisfy(\.isWhitespace) {
            guard let endpoint = RedisEndpoint(hostAndPort: item) else {
                throw RedisError(
                    .invalidConfiguration,
                    "REDIS_CLUSTER_NODES has \"\(item)\", which is not host:port"
                )
            }
            seeds.append(endpoint)
        }
        guard !seeds.isEmpty else {
            throw RedisError(.invalidConfiguration, "REDIS_CLUSTER_NODES names no node")
        }
        self.endpoints = seeds
        self.isCluster = true
        self.username = username
        self.password = password
        self.database = 0
    }

    public var description: String {
        let nodes = self.endpoints.map(\.description).joined(separator: ",")
        let auth = self.password == nil ? "" : " auth=yes"
        return self.isCluster ? "cluster(\(nodes))\(auth)" : "\(nodes) db=\(self.database)\(auth)"
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%"),
                let high = utf8.index(index, offsetBy: 1, limitedBy: utf8.endIndex), high < utf8.endIndex,
                let low = utf8.index(index, offsetBy: 2, limitedBy: utf8.endIndex), low < utf8.endIndex,
                let value = UInt8(String(decoding: [utf8[high], utf8[low]], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                index = utf8.index(after: low)
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Capped exponential backoff with full jitter: attempt n waits a random time in [0, min(maximum, initial·2ⁿ)].
public struct Backoff: Sendable, Hashable {
    /// The cap of the first attempt's wait.
    public var initial: Duration
    /// The cap of any attempt's wait.
    public var maximum: Duration

    /// Makes a backoff policy.
    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    /// Sleeps `duration`; `false` when the task is cancelled (at once, or during the sleep). Loops that wait
    /// between attempts stop on `false` instead of going round again without waiting.
    public static func sleep(_ duration: Duration) async -> Bool {
        do {
            try await Task.sleep(for: duration)
            return true
        } catch {
            return false
        }
    }

    /// The longest wait of attempt `attempt` (0-based), before jitter.
    public func ceiling(attempt: Int) -> Duration {
        let factor = 1 << min(max(attempt, 0), 30)
        let scaled = self.initial * factor
        return scaled > self.maximum ? self.maximum : scaled
    }

    /// A jittered wait for attempt `attempt`, drawn from `generator`.
    public func delay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let ceiling = self.ceiling(attempt: attempt)
        let nanoseconds = ceiling.components.seconds * 1_000_000_000 + ceiling.components.attoseconds / 1_000_000_000
        guard nanoseconds > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...nanoseconds, using: &generator))
    }

    /// A jittered wait for attempt `attempt`.
    public func delay(attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return self.delay(attempt: attempt, using: &generator)
    }
}

extension Backoff {
    /// Waits the jittered delay of attempt `attempt`; returns `false` at once when the task is cancelled, so a
    /// retry loop built on it ends instead of spinning.
    public func wait(attempt: Int) async -> Bool {
        do {
            try await Task.sleep(for: self.delay(attempt: attempt))
            return true
        } catch {
            return false
        }
    }
}
