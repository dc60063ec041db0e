import ArgumentParser
import Logging
import MarkovChains
import ServiceLifecycle
import UnixSignals

/// `markov trainer`: one trainer replica.
struct Trainer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trainer",
        abstract: "Apply the event streams to the chains, exactly once (run any number of these)."
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Entries read per lane of a partition per batch (bulk entries: imports and backfills).") var batchSize = 512
    @Option(help: "Seconds an entry may sit unacknowledged with another consumer of an owned partition before it is claimed.")
    var claimAfter = 10
    @Option(help: "Seconds a partition's lease lasts unless renewed: a dead trainer's partitions move after this.")
    var leaseTTL = 10
    @Option(help: "Memory for the chains a trainer keeps, in MiB (approximate; reported as markov_trainer_cache_bytes).")
    var cacheMB = 512

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.trainer")
        var configuration = MarkovChains.Trainer.Configuration(consumer: RoleContext.consumerName(role: "trainer"))
        configuration.partitions = context.configuration.partitions
        configuration.batchSize = self.batchSize
        configuration.claimAfter = .seconds(self.claimAfter)
        guard self.leaseTTL >= 2 else { throw ValidationError("--lease-ttl must be at least 2 seconds") }
        configuration.leaseTTL = .seconds(self.leaseTTL)
        configuration.heartbeat = .milliseconds(min(1000, self.leaseTTL * 1000 / 5))
        guard self.cacheMB >= 0 else { throw ValidationError("--cache-mb must not be negative") }
        configuration.cacheBytes = self.cacheMB << 20
        configuration.commandPrefix = context.configuration.commandPrefix
        let trainer = MarkovChains.Trainer(
            store: context.store, log: context.log, configuration: configuration, flags: context.flags, logger: context.logger
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: RedisClientService(client: context.redis)),
                    context.observability([{ ("trainer", trainer.isRunning) }]),
                    .init(service: context.flags),
                    .init(service: trainer, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: context.logger
            )
        )
        try await group.run()
    }
}
