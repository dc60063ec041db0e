import ArgumentParser
import MarkovChains
import MarkovCore
import Redis

/// `markov settings --guild G`: shows and changes a guild's settings.
struct Settings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show or change a guild's settings.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "The guild (Discord id).") var guild: String
    @Option(help: "Enable learning in a channel (repeatable).") var listen: [String] = []
    @Option(help: "Disable learning in a channel (repeatable).") var unlisten: [String] = []
    @Option(help: "Let an opted-out user's new messages be learnt again (repeatable).") var rememberUser: [String] = []

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.settings")
        defer { context.redis.shutdown() }
        for channel in self.listen { try await context.store.setListening(true, channel: try snowflake(channel, "--listen"), guild: guild) }
        for channel in self.unlisten { try await context.store.setListening(false, channel: try snowflake(channel, "--unlisten"), guild: guild) }
        for user in self.rememberUser { try await context.store.rememberUser(try snowflake(user, "--remember-user"), guild: guild) }
        print("guild \(guild)")
        print("  learning in channels: \(try await context.store.listenChannels(guild: guild).joined(separator: ", "))")
        print("  opted-out users: \(try await context.store.optedOutUsers(guild: guild).joined(separator: ", "))")
    }
}
