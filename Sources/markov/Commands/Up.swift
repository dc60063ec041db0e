import ArgumentParser
import Foundation
import Logging
import MarkovChains
import MarkovCore
import DiscordGateway
import DiscordResponder
import Redis
import ServiceLifecycle
import UnixSignals

/// `markov up`: every role in one process, on a private Redis when none is configured; with `DISCORD_TOKEN` a
/// real bot (gateway, trainer, responder), without it a local console channel.
struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the bot in one process: a private Redis, a trainer, and a console channel (or, with DISCORD_TOKEN, the gateway and a responder).",
        discussion: """
            With no REDIS_URL or REDIS_CLUSTER_NODES, starts redis-server from PATH with its data in --data \
            (append-only file on) and stops it on exit. Without DISCORD_TOKEN, each line typed is a message in \
            a local guild (id 1): it is learnt, and `!mark`, `!mark debug`, `!mark help`, `/mark seed:words` or \
            a mention (@markov) answers. Ctrl-D or Ctrl-C ends it.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "Directory of the private Redis's data.") var data = "./data"
    @Option(name: .customLong("import"), help: "History files to learn in the console guild first (repeatable).")
    var imports: [String] = []

    static let consoleGuild = Snowflake("1")!

    func run() async throws {
        LoggingSetup.once
        var configuration = try await RoleContext.configuration(self.options)
        if ProcessInfo.processInfo.environment["LOG_LEVEL"] == nil && self.options.logLevel == nil {
            configuration.logLevel = .warning // the console is for conversation; logs go to stderr when asked
        }
        var logger = Logger(label: "markov.up")
        logger.logLevel = configuration.logLevel
        var privateRedis: PrivateRedis?
        if !configuration.redisIsConfigured {
            let started = try await PrivateRedis.start(directory: self.data, logger: logger)
            privateRedis = started
            configuration.redis = try RedisConfiguration(url: started.url)
        }
        do {
            try await self.run(configuration: configuration)
        } catch {
            await privateRedis?.stop()
            throw error
        }
        await privateRedis?.stop()
    }

    private func run(configuration: MarkovConfiguration) async throws {
        let context = RoleContext(configuration: configuration, label: "markov.up")
        try await context.store.prepare()
        try await context.log.ensureGroup("trainers")
        var trainerConfiguration = MarkovChains.Trainer.Configuration(consumer: RoleContext.consumerName(role: "up"))
        trainerConfiguration.partitions = configuration.partitions
        trainerConfiguration.commandPrefix = configuration.commandPrefix
        trainerConfiguration.block = .milliseconds(500)
        let trainer = MarkovChains.Trainer(
            store: context.store, log: context.log, configuration: trainerConfiguration, flags: context.flags, logger: context.logger
        )
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: RedisClientService(client: context.redis)),
            .init(service: context.flags),
            .init(service: trainer, failureTerminationBehavior: .gracefullyShutdownGroup),
        ]
        if let token = configuration.discordToken, !token.isEmpty {
            // A real bot: every role in this process, with one metrics and readiness endpoint.
            var gatewayConfiguration = GatewayService.Configuration(token: token, owner: RoleContext.consumerName(role: "up"))
            gatewayConfiguration.rest = try Responder.restClient(context: context)
            gatewayConfiguration.gatewayURL = configuration.discordGatewayURL
            let gateway = GatewayService(configuration: gatewayConfiguration, log: context.log, logger: context.logger)
            let responder = try Responder.makeResponder(context: context)
            services.append(context.observability([
                { ("trainer", trainer.isRunning) },
                { ("responder", responder.isRunning) },
                {
                    let (ready, total) = gateway.recordShardStates()
                    return ("shards \(ready)/\(total)", total > 0 && ready == total)
                },
            ]))
            services.append(.init(service: gateway, failureTerminationBehavior: .gracefullyShutdownGroup))
            services.append(.init(service: responder, failureTerminationBehavior: .gracefullyShutdownGroup))
        } else {
            let console = ConsoleChannel(context: context, guild: Self.consoleGuild, imports: self.imports)
            services.append(.init(service: console, successTerminationBehavior: .gracefullyShutdownGroup,
                                  failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: context.logger
            )
        )
        try await group.run()
    }
}

/// The local console channel: typed lines are messages of a local guild; bot commands answer on the terminal.
struct ConsoleChannel: Service {
    let context: RoleContext
    let guild: Snowflake
    let imports: [String]

    func run() async throws {
        for file in self.imports { try await self.importFile(file) }
        say("""
            markov console: type messages to teach the bot (guild \(self.guild)); `!mark` asks it to talk, \
            `!mark help` lists commands, Ctrl-D quits.
            """)
        let lines = AsyncStream<String> { continuation in
            // readLine blocks: it gets a thread of its own, never one of the event loops.
            let thread = Thread {
                while let line = readLine(strippingNewline: true) { continuation.yield(line) }
                continuation.finish()
            }
            thread.start()
        }
        var counter = 0
        for await line in lines.cancelOnGracefulShutdown() {
            counter += 1
            do {
                try await self.handle(line, number: counter)
            } catch {
                say("markov: \(error)")
            }
        }
    }

    /// A typed line: a trigger (`!mark…`, `@markov …`, `/mark seed:…`) is answered exactly as the responder
    /// answers on Discord (the same ``Trigger`` and ``ReplyComposer``); anything else is learnt.
    private func handle(_ line: String, number: Int) async throws {
        let trimmed = line.drop { $0 == " " }
        let trigger: Trigger?
        if trimmed.hasPrefix("/mark") {
            let seed = trimmed.dropFirst("/mark".count).replacingOccurrences(of: "seed:", with: "")
            trigger = Trigger(kind: .slash, request: .sentence(seed: Tokenizer.tokens(seed), debug: false))
        } else {
            // The console's bot is user 0: "@markov words" is a mention of it.
            let content = trimmed.lowercased().hasPrefix("@markov") ? "<@0>" + trimmed.dropFirst("@markov".count) : String(trimmed)
            trigger = Trigger.detect(content: content, botUserID: "0", prefix: self.context.configuration.commandPrefix)
        }
        guard let trigger else {
            guard !Tokenizer.tokens(line).isEmpty else { return }
            let millis = Int64(Date().timeIntervalSince1970 * 1000)
            try await self.context.log.append([
                ChainEvent(
                    kind: .create, source: .console, guildID: self.guild, channelID: Snowflake("1"),
                    messageID: "console-\(millis)-\(number)", authorID: Snowflake("1"), content: line, timestamp: millis
                )
            ])
            return
        }
        let composer = ReplyComposer(store: self.context.store, prefix: self.context.configuration.commandPrefix)
        let reply = try await composer.reply(to: trigger.request, guild: self.guild)
        let lines = reply.split(separator: "\n", omittingEmptySubsequences: false)
        if case .help = trigger.request {
            for line in lines { say("  " + line) }
        } else {
            say("markov> \(lines.first ?? "")")
            for line in lines.dropFirst() where !line.hasPrefix("```") { say("  " + line) }
        }
    }

    private func importFile(_ file: String) async throws {
        let meter = ProgressMeter(label: "importing \(file)", total: 0)
        let log = self.context.log
        var appended = 0
        let summary = try await HistoryImporter.read(file: file, guild: self.guild) { events, _ in
            try await log.append(events, lane: .bulk)
            appended += events.count
            meter.update(0, total: appended, detail: "reading")
        }
        let partition = log.keys.partition(of: self.guild)
        while case let backlog = try await log.backlog(group: "trainers", partitions: [partition], lanes: EventLog.Lane.allCases), backlog > 0 {
            meter.update(max(0, appended - backlog), total: appended, detail: summary.format.rawValue)
            try await Task.sleep(for: .milliseconds(100))
        }
        meter.finish(appended, total: appended)
    }
}

/// Prints a line and flushes, so answers show at once even when standard output is a pipe.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
