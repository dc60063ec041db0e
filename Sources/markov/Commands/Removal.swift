import ArgumentParser
import Foundation
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

/// `markov relearn --guild G`.
struct Relearn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Learn a guild's history again under its training filters now.",
        discussion: """
            A change of filters (`markov settings --strip/--keep`, `/filters`) applies to new messages; this applies \
            it to the messages already learnt, from their records: each message whose learnt tokens change is \
            unlearnt as it was learnt and learnt anew. The guild's partition owner does it in order with the guild's \
            messages; without a running trainer, this command applies it itself.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "The guild (Discord id).") var guild: String

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.relearn")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        let commands = ChainCommands(log: context.log)
        let meter = ProgressMeter(label: "relearnt", total: 0, unit: "records")
        let result = try await context.withOwner(of: [guild]) {
            try await commands.relearn(guild, progress: { done, total in meter.update(done, total: total) })
        }
        meter.finish(result.messages, total: result.messages)
        print("read \(result.messages) message records of guild \(guild); \(result.relearnt) learnt again under its filters")
    }
}

/// `markov user-data --guild G --user U`.
struct UserData: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write everything a guild stores about a user, as JSON (what /my-data sends them).",
        discussion: "The messages learnt from them as their records hold them, and whether they opted out. Reads every message record of the guild."
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "The guild (Discord id).") var guild: String
    @Option(help: "The user (Discord id).") var user: String
    @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") var output: String?

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let user = try snowflake(self.user, "--user")
        let context = try await RoleContext(options: self.options, label: "markov.user-data")
        defer { context.redis.shutdown() }
        let meter = ProgressMeter(label: "read", total: 0, unit: "records")
        let data = try await MemberData.read(redis: context.redis, guild: guild, user: user) { done, total in meter.update(done, total: total) }
        meter.finish(data.scanned, total: data.scanned)
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: Data(data.json)) else { throw ValidationError("cannot write \(output)") }
            print("wrote \(data.messages.count) messages of user \(user) in guild \(guild) to \(output)")
        } else {
            FileHandle.standardOutput.write(Data(data.json))
        }
    }
}
