import ArgumentParser

/// `markov`: one executable, every role a subcommand.

struct Markov: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "markov",
        abstract: "A Markov-chain Discord bot that learns how each server talks, with its state in Redis.",
        discussion: """
            Configuration comes from flags, then environment variables, then an optional JSON file \
            (--config or MARKOV_CONFIG_FILE). See README.md for every key.
            """,
        subcommands: [
            Up.self, Gateway.self, Trainer.self, Responder.self, Train.self, Generate.self, Inspect.self,
            Settings.self, ForgetUser.self, RegisterCommands.self, DeleteGuild.self, Migrate.self, Relearn.self, Export.self, Restore.self, UserData.self,
            Flags.self, Probe.self,
        ]
    )
}
