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

    @Option(help: "Entries read per partition per batch.") var batchSize = 256
    @Option(help: "Seconds an entry may sit unacknowledged with a dead consumer before it is claimed.")
    var claimAfter = 60

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.trainer")
        var configuration = MarkovChains.Trainer.Configuration(consumer: RoleContext.consumerName(role: "trainer"))
        configuration.partitions = context.configuration.partitions
        configuration.batchSize = self.batchSize
        configuration.claimAfter = .seconds(self.claimAfter)
        configuration.commandPrefix = context.configuration.commandPrefix
        let trainer = MarkovChains.Trainer(
            store: context.store, log: context.log, configuration: configuration, logger: context.logger
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: RedisClientService(client: context.redis)),
                    context.observability([{ ("trainer", trainer.isRunning) }]),
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
