import ArgumentParser
import Configuration
import Logging
import Redis

/// Options every subcommand takes. Each maps onto a configuration key, and wins over the environment and the
/// configuration file.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: "A JSON configuration file (also MARKOV_CONFIG_FILE).")
    var configFile: String?

    @Option(help: "Redis URL: redis://[:password@]host:port[/db] or unix:///path (also REDIS_URL).")
    var redisURL: String?

    @Option(help: "Comma-separated Redis Cluster seed nodes, host:port (also REDIS_CLUSTER_NODES).")
    var redisClusterNodes: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical (also LOG_LEVEL).")
    var logLevel: String?

    /// The configuration reader: these flags first, then the environment, then the file if one is named.
    func configReader() async throws -> ConfigReader {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        if let redisURL { values["redis.url"] = ConfigValue(.string(redisURL), isSecret: true) }
        if let redisClusterNodes { values["redis.cluster.nodes"] = ConfigValue(.string(redisClusterNodes), isSecret: false) }
        if let logLevel { values["log.level"] = ConfigValue(.string(logLevel), isSecret: false) }
        let environment = EnvironmentVariablesProvider(
            secretsSpecifier: .specific(["DISCORD_TOKEN", "REDIS_URL"])
        )
        var providers: [any ConfigProvider] = [InMemoryProvider(name: "flags", values: values), environment]
        let file = try self.configFile ?? environment.environmentValue(forName: "MARKOV_CONFIG_FILE")
        if let file {
            do {
                // The file provider reads its own path from a reader, which spares us swift-system's FilePath.
                let location = ConfigReader(
                    provider: InMemoryProvider(values: ["filePath": ConfigValue(.string(file), isSecret: false)])
                )
                providers.append(try await FileProvider<JSONSnapshot>(config: location))
            } catch {
                throw ValidationError("cannot read the configuration file \(file): \(error)")
            }
        }
        return ConfigReader(providers: providers)
    }
}
