import Foundation
import Configuration
import Logging
import Redis

/// The settings every role reads, from a ``ConfigReader``.
///
/// | key | environment | type | default |
/// |---|---|---|---|
/// | `redis.url` | `REDIS_URL` | string, secret (may hold a password) | `redis://127.0.0.1:6379` |
/// | `redis.cluster.nodes` | `REDIS_CLUSTER_NODES` | comma-separated `host:port`; turns on cluster mode | none |
/// | `markov.state.size` | `MARKOV_STATE_SIZE` | int, 1…6 | 2 |
/// | `discord.token` | `DISCORD_TOKEN` | string, secret | none |
/// | `discord.api.url` | `DISCORD_API_URL` | string | `https://discord.com/api/v10` |
/// | `discord.gateway.url` | `DISCORD_GATEWAY_URL` | string | from `GET /gateway/bot` |
/// | `markov.partitions` | `MARKOV_PARTITIONS` | int ≥ 1; every process must agree | 16 |
/// | `markov.prefix` | `MARKOV_PREFIX` | string: the command prefix | `!mark` |
/// | `discord.global.limit` | `DISCORD_GLOBAL_LIMIT` | REST requests per second per token (Discord: 50, more by arrangement) | 50 |
/// | `owner.ids` | `OWNER_IDS` | comma-separated user ids allowed every admin command | none |
/// | `markov.http.host` | `MARKOV_HTTP_HOST` | address `/metrics`, `/health`, `/ready` listen on (`0.0.0.0`: every interface) | `127.0.0.1` |
/// | `markov.http.port` | `MARKOV_HTTP_PORT` | port of `/metrics`, `/health`, `/ready` (0: any free port) | 9090 |
/// | `markov.flags.ttl` | `MARKOV_FLAGS_TTL` | seconds (fractions allowed) a role keeps feature flags before reading them again | 5 |
/// | `log.level` | `LOG_LEVEL` | string | `info` |
/// | `log.format` | `LOG_FORMAT` | `text` or `json` (one JSON object per line) | `text` |
struct MarkovConfiguration: Sendable {
    /// How to reach Redis.
    var redis: RedisConfiguration
    /// Whether `redis.url` or `redis.cluster.nodes` was set (`markov up` starts its own server otherwise).
    var redisIsConfigured: Bool
    /// Tokens per chain state.
    var stateSize: Int
    /// Partitions of the event log.
    var partitions: Int
    /// The command prefix; messages starting with it are not learnt.
    var commandPrefix: String
    /// The bot token. Secret: never logged.
    var discordToken: String?
    /// Discord's REST base URL.
    var discordAPIURL: String
    /// A gateway URL that overrides discovery.
    var discordGatewayURL: String?
    /// REST requests per second per token.
    var discordGlobalLimit: Int
    /// Users allowed every admin command.
    var ownerIDs: Set<String>
    /// Address and port of the metrics, health and readiness endpoints.
    var httpHost: String
    var httpPort: Int
    /// How long feature flags are kept before they are read again.
    var flagsTTL: Duration
    /// The log level.
    var logLevel: Logger.Level

    init(config: ConfigReader) throws {
        let url = config.string(forKey: "redis.url", isSecret: true)
        let clusterNodes = config.string(forKey: "redis.cluster.nodes")
        do {
            if let clusterNodes, !clusterNodes.isEmpty {
                // Credentials for a cluster come from REDIS_URL when it is set too.
                let credentials = try url.map { try RedisConfiguration(url: $0) }
                self.redis = try RedisConfiguration(
                    clusterNodes: clusterNodes,
                    username: credentials?.username,
                    password: credentials?.password
                )
            } else {
                self.redis = try RedisConfiguration(url: url ?? "redis://127.0.0.1:6379")
            }
        }
        self.redisIsConfigured = url != nil || clusterNodes != nil
        self.stateSize = config.int(forKey: "markov.state.size", default: 2)
        guard (1...6).contains(self.stateSize) else {
            throw ConfigurationError("MARKOV_STATE_SIZE must be between 1 and 6, not \(self.stateSize)")
        }
        self.partitions = config.int(forKey: "markov.partitions", default: 16)
        guard (1...1024).contains(self.partitions) else {
            throw ConfigurationError("MARKOV_PARTITIONS must be between 1 and 1024, not \(self.partitions)")
        }
        self.commandPrefix = config.string(forKey: "markov.prefix", default: "!mark")
        self.discordToken = config.string(forKey: "discord.token", isSecret: true)
        self.discordAPIURL = config.string(forKey: "discord.api.url", default: "https://discord.com/api/v10")
        self.discordGatewayURL = config.string(forKey: "discord.gateway.url")
        // Loopback unless asked: the deployment files set 0.0.0.0 where Prometheus and the probes reach the role.
        self.httpHost = config.string(forKey: "markov.http.host", default: "127.0.0.1").trimmingCharacters(in: .whitespaces)
        guard !self.httpHost.isEmpty, !self.httpHost.contains(where: { $0 == "/" || $0 == " " }) else {
            throw ConfigurationError("MARKOV_HTTP_HOST must be an address to listen on, such as 127.0.0.1 or 0.0.0.0")
        }
        self.httpPort = config.int(forKey: "markov.http.port", default: 9090)
        guard (0...65535).contains(self.httpPort) else { throw ConfigurationError("MARKOV_HTTP_PORT must be a port number") }
        self.discordGlobalLimit = config.int(forKey: "discord.global.limit", default: 50)
        guard self.discordGlobalLimit > 0 else { throw ConfigurationError("DISCORD_GLOBAL_LIMIT must be positive") }
        self.ownerIDs = Set((config.string(forKey: "owner.ids") ?? "").split(separator: ",").map {
            String($0.trimmingCharacters(in: .whitespaces))
        }.filter { !$0.isEmpty })
        let flagsTTL = config.double(forKey: "markov.flags.ttl", default: 5)
        guard flagsTTL >= 0, flagsTTL <= 3600 else { throw ConfigurationError("MARKOV_FLAGS_TTL must be between 0 and 3600 seconds, not \(flagsTTL)") }
        self.flagsTTL = .milliseconds(Int64((flagsTTL * 1000).rounded()))
        let level = config.string(forKey: "log.level", default: "info")
        guard let logLevel = Logger.Level(rawValue: level.lowercased()) else {
            throw ConfigurationError("LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical")
        }
        self.logLevel = logLevel
    }
}

/// A setting that cannot be used, with the sentence that says why.
struct ConfigurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
