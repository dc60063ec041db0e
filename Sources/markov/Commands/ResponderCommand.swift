import ArgumentParser
import DiscordREST
import DiscordResponder
import Foundation
import MarkovChains
import Redis
import ServiceLifecycle
import UnixSignals

/// `markov responder`: answers mentions, the prefix and `/mark` (run any number of these).
struct Responder: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer mentions, the prefix and slash commands through Discord's REST API (run any number of these)."
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Seconds after which a trigger is too old to answer (after an outage).") var maxAge = 300
    @Option(help: "Seconds a guild's auto-respond channels and chances are kept before being read again (0: every message).")
    var settingsCache = 2
    @Option(help: "Seconds the bot stays quiet in a channel after speaking there unasked.") var cooldown = 10
    @Option(help: "Seconds an entry may sit unacknowledged (a dead responder, a failed reply) before it is tried again.")
    var claimAfter = 30
    @Option(help: "History backfills (/train) this responder reads at once (0: none).") var backfills = 2
    @Option(help: "Seconds a dead responder's backfill waits before another takes it over.") var backfillLease = 30
    @Option(help: "Seconds between edits of a backfill's progress message.") var backfillProgress = 5

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.responder")
        guard self.backfills >= 0, self.settingsCache >= 0, self.backfillLease > 0, self.backfillProgress > 0 else {
            throw ValidationError("--backfills and --settings-cache must be at least 0; --backfill-lease and --backfill-progress at least 1")
        }
        var responderOptions = ResponderOptions()
        responderOptions.maxAge = self.maxAge
        responderOptions.cooldown = self.cooldown
        responderOptions.settingsCache = self.settingsCache
        responderOptions.claimAfter = self.claimAfter
        responderOptions.backfills = self.backfills
        responderOptions.backfillLease = self.backfillLease
        responderOptions.backfillProgress = self.backfillProgress
        let responder = try Self.makeResponder(context: context, options: responderOptions)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: RedisClientService(client: context.redis)),
                    context.observability([{ ("responder", responder.isRunning) }]),
                    .init(service: context.flags),
                    .init(service: responder, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: context.logger
            )
        )
        try await group.run()
    }

    /// The REST client every role uses: the token, and rate limits shared through Redis.
    static func restClient(context: RoleContext) throws -> DiscordRESTClient {
        guard let token = context.configuration.discordToken, !token.isEmpty else {
            throw ValidationError("DISCORD_TOKEN is not set: this role needs the bot token")
        }
        var rest = DiscordRESTClient(apiURL: context.configuration.discordAPIURL, token: token, logger: context.logger)
        var limits = SharedRateLimits(redis: context.redis)
        limits.globalLimit = context.configuration.discordGlobalLimit
        rest.rateLimits = limits
        return rest
    }

    /// The responder's command-line settings, in seconds (defaults for `markov up`).
    struct ResponderOptions {
        var maxAge = 300
        var cooldown = 10
        var settingsCache = 2
        var claimAfter = 30
        var backfills = 2
        var backfillLease = 30
        var backfillProgress = 5
    }

    static func makeResponder(context: RoleContext, options: ResponderOptions = .init()) throws -> DiscordResponder.Responder {
        var configuration = DiscordResponder.Responder.Configuration(consumer: RoleContext.consumerName(role: "responder"))
        configuration.partitions = context.configuration.partitions
        configuration.commandPrefix = context.configuration.commandPrefix
        configuration.maxAge = .seconds(options.maxAge)
        configuration.cooldown = .seconds(options.cooldown)
        configuration.settingsCacheTTL = .seconds(options.settingsCache)
        configuration.claimAfter = .seconds(options.claimAfter)
        configuration.backfills = options.backfills
        configuration.backfillLease = .seconds(options.backfillLease)
        configuration.backfillProgressInterval = .seconds(options.backfillProgress)
        configuration.owners = context.configuration.ownerIDs
        return DiscordResponder.Responder(
            store: context.store, log: context.log, rest: try Self.restClient(context: context),
            configuration: configuration, flags: context.flags, logger: context.logger
        )
    }
}

/// `markov register-commands`: installs the slash commands with one PUT.
struct RegisterCommands: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Install the slash commands with one PUT (globally, or in one guild for testing)."
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "Install in this guild only (takes effect at once; global commands can take a while).") var guild: String?
    @Option(help: "The application id (default: the one the gateway recorded at READY).") var application: String?

    /// The command set. Admin commands carry `default_member_permissions` (Manage Channels) so Discord hides
    /// them from others; the responder checks the permissions again.
    static let commands = #"""
        [{"name":"mark","type":1,"description":"Say something in this server's voice",
          "options":[{"name":"seed","type":3,"description":"Words to start from","required":false},
                     {"name":"debug","type":5,"description":"Show each word's probability","required":false},
                     {"name":"tts","type":5,"description":"Read it aloud","required":false}]},
         {"name":"help","type":1,"description":"What markov does and how to ask it"},
         {"name":"listen","type":1,"description":"Channels markov learns from","default_member_permissions":"16",
          "options":[{"name":"add","type":1,"description":"Learn from a channel","options":[{"name":"channel","type":7,"description":"The channel","required":false}]},
                     {"name":"remove","type":1,"description":"Stop learning from a channel","options":[{"name":"channel","type":7,"description":"The channel","required":false}]},
                     {"name":"list","type":1,"description":"Where markov learns"}]},
         {"name":"autorespond","type":1,"description":"Channels where markov answers every message","default_member_permissions":"16",
          "options":[{"name":"add","type":1,"description":"Answer every message in a channel","options":[{"name":"channel","type":7,"description":"The channel","required":false}]},
                     {"name":"remove","type":1,"description":"Stop answering every message","options":[{"name":"channel","type":7,"description":"The channel","required":false}]},
                     {"name":"list","type":1,"description":"Where markov answers every message"}]},
         {"name":"chance","type":1,"description":"How often markov speaks unasked","default_member_permissions":"16",
          "options":[{"name":"set","type":1,"description":"Set the chance","options":[
                       {"name":"percent","type":10,"description":"0 to 100; fractions allowed","required":true,"min_value":0,"max_value":100},
                       {"name":"channel","type":7,"description":"Only in this channel","required":false}]}]},
         {"name":"images","type":1,"description":"How often a reply carries an image posted here before","default_member_permissions":"16",
          "options":[{"name":"percent","type":10,"description":"0 (the default) to 100","required":true,"min_value":0,"max_value":100}]},
         {"name":"reply-channels","type":1,"description":"Channels where markov answers (none: all)","default_member_permissions":"16",
          "options":[{"name":"add","type":1,"description":"Answer in a channel (and only in the channels added)","options":[{"name":"channel","type":7,"description":"The channel","required":false}]},
                     {"name":"remove","type":1,"description":"Stop answering in a channel","options":[{"name":"channel","type":7,"description":"The channel","required":false}]},
                     {"name":"list","type":1,"description":"Where markov answers"}]},
         {"name":"ask-roles","type":1,"description":"Roles whose members may ask markov (none: everyone)","default_member_permissions":"16",
          "options":[{"name":"add","type":1,"description":"Let a role ask (and only the roles added)","options":[{"name":"role","type":8,"description":"The role","required":true}]},
                     {"name":"remove","type":1,"description":"Stop letting a role ask","options":[{"name":"role","type":8,"description":"The role","required":true}]},
                     {"name":"list","type":1,"description":"Who may ask markov"}]},
         {"name":"filters","type":1,"description":"What markov strips from messages before learning them","default_member_permissions":"16",
          "options":[{"name":"strip","type":1,"description":"Strip this from messages learnt from now on","options":[{"name":"what","type":3,"description":"What to strip","required":true,"choices":[{"name":"links","value":"links"},{"name":"invites","value":"invites"},{"name":"custom emoji","value":"emoji"},{"name":"mentions","value":"mentions"},{"name":"code","value":"code"}]}]},
                     {"name":"keep","type":1,"description":"Learn this again in messages from now on","options":[{"name":"what","type":3,"description":"What to keep","required":true,"choices":[{"name":"links","value":"links"},{"name":"invites","value":"invites"},{"name":"custom emoji","value":"emoji"},{"name":"mentions","value":"mentions"},{"name":"code","value":"code"}]}]},
                     {"name":"list","type":1,"description":"What markov strips before learning"},
                     {"name":"relearn","type":1,"description":"Apply the filters to the messages learnt before"}]},
         {"name":"blocklist","type":1,"description":"Words markov never says here","default_member_permissions":"16",
          "options":[{"name":"add","type":1,"description":"Never say this word (x* starts with, *x ends in, *x* contains)","options":[{"name":"word","type":3,"description":"The word","required":true,"max_length":100}]},
                     {"name":"remove","type":1,"description":"Say this word again","options":[{"name":"word","type":3,"description":"The word","required":true,"max_length":100}]},
                     {"name":"list","type":1,"description":"The words markov never says"}]},
         {"name":"forget-me","type":1,"description":"Forget my messages and never learn from me again"},
         {"name":"remember-me","type":1,"description":"Learn from my new messages again"},
         {"name":"my-data","type":1,"description":"Get a file of everything markov stores about me here"},
         {"name":"purge-on-leave","type":1,"description":"Forget a member's messages when they leave","default_member_permissions":"32",
          "options":[{"name":"enabled","type":5,"description":"On or off (leave out to see the setting)","required":false}]},
         {"name":"delete-data","type":1,"description":"Delete this server's whole model","default_member_permissions":"32"},
         {"name":"train","type":1,"description":"Learn from the history of the channels markov listens to","default_member_permissions":"16"}]
        """#

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.register-commands")
        defer { context.redis.shutdown() }
        if let guild { _ = try snowflake(guild, "--guild") }
        var application = self.application
        if application == nil {
            application = try? await context.redis.send("HGET", "bot:user", "application_id").string
        }
        guard let application else {
            throw ValidationError("no application id: pass --application, or run the gateway once so READY records it")
        }
        let rest = try Responder.restClient(context: context)
        try await rest.putCommands(application: application, guild: self.guild, json: Array(Self.commands.utf8))
        print("installed the slash commands \(self.guild.map { "in guild \($0)" } ?? "globally") for application \(application)")
    }
}
