import ArgumentParser
import Foundation
import Logging
import MarkovChains
import MarkovCore
import DiscordGateway
import DiscordREST
import DiscordResponder
import LocalConsole
import Observability
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
            a mention (@markov) answers. Ctrl-D or Ctrl-C ends it. The web console (printed at start; \
            docs/web-console.md) is the same conversation in a browser, with imports, a state inspector and \
            live charts.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "Directory of the private Redis's data.") var data = "./data"
    @Option(name: .customLong("import"), help: "History files to learn in the console guild first (repeatable).")
    var imports: [String] = []
    @Option(help: "Port of the web console (0: any free port).") var webPort = WebConsole.defaultPort
    @Option(help: "Address the web console listens on; anything but loopback requires the token printed at start.")
    var webHost = "127.0.0.1"
    @Flag(help: "No web console.") var noWeb = false

    func validate() throws {
        guard (0...65535).contains(self.webPort) else { throw ValidationError("--web-port must be a port number (0 for any free one)") }
        guard !self.webHost.isEmpty, !self.webHost.contains(where: { $0 == "/" || $0 == " " }) else {
            throw ValidationError("--web-host must be a host name or address, not \"\(self.webHost)\"")
        }
    }

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
        Observability.bootstrap()  // the web console draws the metrics the roles record
        let context = RoleContext(configuration: configuration, label: "markov.up")
        let conversation = ConsoleConversation(store: context.store, log: context.log, prefix: configuration.commandPrefix)
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
            if let web = try self.webConsole(conversation, context: context, rateLimits: SharedRateLimits(redis: context.redis), beforeSample: {
                gateway.recordShardStates()
            }) {
                services.append(.init(service: web, failureTerminationBehavior: .gracefullyShutdownGroup))
            }
        } else {
            if let web = try self.webConsole(conversation, context: context) {
                services.append(.init(service: web, failureTerminationBehavior: .gracefullyShutdownGroup))
            }
            let console = ConsoleChannel(context: context, conversation: conversation, imports: self.imports)
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

extension Up {
    /// The web console, unless `--no-web`; on a host other than loopback it requires a token, printed in its URL.
    fileprivate func webConsole(
        _ conversation: ConsoleConversation, context: RoleContext, rateLimits: SharedRateLimits? = nil,
        beforeSample: @escaping @Sendable () -> Void = {}
    ) throws -> WebConsole? {
        guard !self.noWeb else { return nil }
        var configuration = WebConsole.Configuration()
        configuration.host = self.webHost
        configuration.port = self.webPort
        if !["127.0.0.1", "localhost", "::1"].contains(self.webHost.lowercased()) { configuration.token = WebConsole.makeToken() }
        return try WebConsole(
            configuration: configuration, conversation: conversation, rateLimits: rateLimits, beforeSample: beforeSample,
            logger: context.logger, announce: { say("web console: \($0)") }
        )
    }
}

/// The terminal console: typed lines go to the console's conversation (``ConsoleConversation``, shared with the
/// web console); answers are printed.
struct ConsoleChannel: Service {
    let context: RoleContext
    let conversation: ConsoleConversation
    let imports: [String]

    func run() async throws {
        for file in self.imports { try await self.importFile(file) }
        say("""
            markov console: type messages to teach the bot (guild \(self.conversation.guild)); `!mark` asks it to talk, \
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
        for await line in lines.cancelOnGracefulShutdown() {
            do {
                guard case .reply(let answer, let help) = try await self.conversation.handle(line) else { continue }
                let lines = answer.text.split(separator: "\n", omittingEmptySubsequences: false)
                if help {
                    for line in lines { say("  " + line) }
                } else {
                    say("markov> \(lines.first ?? "")")
                    for line in lines.dropFirst() where !line.hasPrefix("```") { say("  " + line) }
                }
            } catch {
                say("markov: \(error)")
            }
        }
    }

    private func importFile(_ file: String) async throws {
        let meter = ProgressMeter(label: "importing \(file)", total: 0)
        let importer = ConsoleImport(log: self.context.log, guild: self.conversation.guild)
        let last = try await importer.run(file: file) { progress in
            switch progress.phase {
            case .reading: meter.update(0, total: progress.appended, detail: "reading")
            default: meter.update(progress.applied, total: progress.appended, detail: progress.format ?? "")
            }
        }
        meter.finish(last.appended, total: last.appended)
    }
}

/// Prints a line and flushes, so answers show at once even when standard output is a pipe.
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
