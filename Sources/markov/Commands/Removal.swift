import ArgumentParser
import MarkovChains
import MarkovCore
import Redis

/// `markov forget-user --guild G --user U`.
struct ForgetUser: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove every message of a user from a guild's chain and keep them out from then on.",
        discussion: "The guild's partition owner does it in order with the guild's messages; without a running trainer, this command applies it itself."
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "The guild (Discord id).") var guild: String
    @Option(help: "The user (Discord id).") var user: String

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let user = try snowflake(self.user, "--user")
        let context = try await RoleContext(options: self.options, label: "markov.forget-user")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        let commands = ChainCommands(log: context.log)
        let forgotten = try await context.withOwner(of: [guild]) { try await commands.forgetUser(user, guild: guild) }
        print("forgot \(forgotten) messages of user \(user) in guild \(guild); their new messages will not be learnt")
    }
}

/// `markov delete-guild --guild G`.
struct DeleteGuild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete all of a guild's data.",
        discussion: "The guild's partition owner does it in order with the guild's messages; without a running trainer, this command applies it itself."
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "The guild (Discord id).") var guild: String

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.delete-guild")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        let commands = ChainCommands(log: context.log)
        let removed = try await context.withOwner(of: [guild]) { try await commands.deleteGuild(guild) }
        print("deleted \(removed) keys of guild \(guild)")
    }
}
