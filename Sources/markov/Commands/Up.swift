import ArgumentParser
import Foundation
import Logging
import MarkovChains
import MarkovCore
import Redis
import ServiceLifecycle
import UnixSignals

/// `markov up`: every role that exists in one process, on a private Redis when none is configured, with a local
/// console channel. (The gateway and the responder join when they are built.)
struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the bot in one process: a private Redis, a trainer, and a console channel.",
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
        if configuration.discordToken != nil {
            throw ValidationError(
                "markov up with DISCORD_TOKEN needs the gateway and the responder, which are not built yet; "
                    + "unset DISCORD_TOKEN to use the local console channel"
            )
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
        let trainer = MarkovChains.Trainer(store: context.store, log: context.log, configuration: trainerConfiguration, logger: context.logger)
        let console = ConsoleChannel(context: context, guild: Self.consoleGuild, imports: self.imports)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: RedisClientService(client: context.redis)),
                    .init(service: trainer, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: console, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
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

    private func handle(_ line: String, number: Int) async throws {
        let tokens = Tokenizer.tokens(line)
        guard let first = tokens.first else { return }
        let prefix = self.context.configuration.commandPrefix
        if first.lowercased() == prefix.lowercased() {
            let rest = Array(tokens.dropFirst())
            switch rest.first?.lowercased() {
            case "help":
                let help = [
                    ("\(prefix) [words]", "a sentence, starting from your words when it knows them"),
                    ("\(prefix) debug [words]", "the same, with each word's probability"),
                    ("/mark seed:words", "the slash-command form"),
                    ("@markov words", "a mention works too"),
                    ("anything else", "is learnt"),
                ]
                let width = help.map(\.0.count).max() ?? 0
                for (command, meaning) in help {
                    say("  " + command + String(repeating: " ", count: width - command.count + 2) + meaning)
                }
            case "debug":
                try await self.answer(seed: Array(rest.dropFirst()), debug: true)
            default:
                try await self.answer(seed: rest, debug: false)
            }
        } else if first == "/mark" {
            let text = line.drop(while: { $0 != "k" }).dropFirst()
            let seed = text.replacingOccurrences(of: "seed:", with: "")
            try await self.answer(seed: Tokenizer.tokens(seed), debug: false)
        } else if first.lowercased() == "@markov" || first == "<@0>" {
            try await self.answer(seed: Array(tokens.dropFirst()), debug: false)
        } else {
            let millis = Int64(Date().timeIntervalSince1970 * 1000)
            try await self.context.log.append([
                ChainEvent(
                    kind: .create, source: .console, guildID: self.guild, channelID: Snowflake("1"),
                    messageID: "console-\(millis)-\(number)", authorID: Snowflake("1"), content: line, timestamp: millis
                )
            ])
        }
    }

    private func answer(seed: [String], debug: Bool) async throws {
        var options = ChainStore.GenerationOptions()
        options.seedWords = seed
        options.debug = debug
        var result = try await self.context.store.generate(guild: self.guild, options: options)
        if result.sentence == nil {
            // A young chain can only repeat what it heard; better that than silence.
            options.allowCopies = true
            result = try await self.context.store.generate(guild: self.guild, options: options)
        }
        if debug {
            say("  \(result.tries) tries; \(result.notes)")
            for step in result.steps {
                say("  \(step.token.isEmpty ? "<end>" : step.token)  \(step.count)/\(step.total)")
            }
        }
        say("markov> \(result.sentence ?? "I don't know enough words yet. Say something first!")")
    }

    private func importFile(_ file: String) async throws {
        let (format, events) = try HistoryImporter.events(fromFile: file, guild: self.guild)
        let meter = ProgressMeter(label: "importing \(file) (\(format.rawValue))", total: events.count)
        for chunk in stride(from: 0, to: events.count, by: 1000) {
            try await self.context.log.append(Array(events[chunk..<min(chunk + 1000, events.count)]))
        }
        let partition = self.context.log.keys.partition(of: self.guild)
        while case let backlog = try await self.context.log.backlog(group: "trainers", partitions: [partition]), backlog > 0 {
            meter.update(max(0, events.count - backlog))
            try await Task.sleep(for: .milliseconds(100))
        }
        meter.finish(events.count)
    }
}

/// Prints a line and flushes, so answers show at once even when standard output is a pipe.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
