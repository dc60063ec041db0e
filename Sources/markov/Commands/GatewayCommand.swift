import ArgumentParser
import DiscordGateway
import DiscordProtocol
import DiscordREST
import Foundation
import ServiceLifecycle
import UnixSignals

/// `markov gateway`: holds Discord gateway shards and feeds the event streams.
struct Gateway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold Discord gateway shards and feed the event streams (stateless: sessions live in Redis).",
        discussion: """
            Without --shards or --shards-per-pod, gateway processes share the shards through leases in Redis: \
            add or remove processes like any other replica; they rebalance within seconds, and a dead process's \
            shards are resumed elsewhere after --lease-ttl. With --shards (or the StatefulSet pod ordinal and \
            --shards-per-pod) a process holds those shards, each leased too, so two processes never hold one. The \
            shard count is --shard-count, or Discord's recommendation from GET /gateway/bot (auto), agreed by every \
            gateway through Redis (gateway:shard-count).
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Shards this process holds: 0-3, 5 or 0,2,4-6 (default: a share of them, leased in Redis).") var shards: String?
    @Option(help: "Total number of shards, or auto for Discord's recommendation.") var shardCount = "auto"
    @Option(help: "Shards per StatefulSet pod: pod N (hostname ending in -N) holds N×K ..< (N+1)×K.")
    var shardsPerPod: Int?
    @Option(help: "Gateway intents bit set (default GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT).")
    var intents = GatewayIntents.default.rawValue
    @Flag(help: "Ask for zlib-stream transport compression.") var compress = false
    @Option(help: "Seconds a shard's lease lasts unless renewed: a dead process's shards move after it.") var leaseTTL = 10
    @Option(help: "Events that may wait in memory while Redis is unreachable before the shards stop reading.")
    var eventBacklog = 50_000
    @Option(help: ArgumentHelp("Milliseconds between identifies of one bucket (Discord: 5000).", visibility: .hidden))
    var identifyIntervalMs = 5000
    @Option(help: ArgumentHelp("Identify concurrency when discovery is skipped.", visibility: .hidden))
    var maxConcurrency = 1

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.gateway")
        guard let token = context.configuration.discordToken, !token.isEmpty else {
            throw ValidationError("DISCORD_TOKEN is not set: the gateway needs the bot token")
        }
        var configuration = GatewayService.Configuration(token: token, owner: RoleContext.consumerName(role: "gateway"))
        configuration.rest = DiscordRESTClient(apiURL: context.configuration.discordAPIURL, token: token, logger: context.logger)
        configuration.gatewayURL = context.configuration.discordGatewayURL
        if self.shardCount != "auto" {
            guard let count = Int(self.shardCount), count > 0 else {
                throw ValidationError("--shard-count must be a positive number or auto, not \(self.shardCount)")
            }
            configuration.shardCount = count
        }
        do {
            if let perPod = self.shardsPerPod {
                guard self.shards == nil else { throw ValidationError("give --shards or --shards-per-pod, not both") }
                configuration.shards = try ShardSelection.forPod(hostname: ProcessInfo.processInfo.hostName, perPod: perPod)
            } else if let shards = self.shards {
                configuration.shards = try ShardSelection.parse(shards)
            } else {
                configuration.leaseShards = true
            }
        } catch let error as ShardSelectionError {
            throw ValidationError(error.description)
        }
        configuration.intents = GatewayIntents(rawValue: self.intents)
        configuration.compress = self.compress
        guard self.eventBacklog > 0 else { throw ValidationError("--event-backlog must be at least 1") }
        configuration.eventBacklog = self.eventBacklog
        configuration.identifyInterval = .milliseconds(self.identifyIntervalMs)
        configuration.maxConcurrency = self.maxConcurrency
        guard self.leaseTTL >= 2 else { throw ValidationError("--lease-ttl must be at least 2 seconds") }
        configuration.leaseTTL = .seconds(self.leaseTTL)
        configuration.heartbeat = .milliseconds(min(1000, self.leaseTTL * 1000 / 5))
        let gateway = GatewayService(configuration: configuration, log: context.log, logger: context.logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: RedisClientService(client: context.redis)),
                    context.observability([{
                        let (ready, total) = gateway.recordShardStates()
                        return ("shards \(ready)/\(total)", total > 0 && ready == total)
                    }]),
                    .init(service: gateway, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: context.logger
            )
        )
        try await group.run()
    }
}
