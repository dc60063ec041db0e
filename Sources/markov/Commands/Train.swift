import ArgumentParser
import Foundation
import Logging
import MarkovChains
import MarkovCore
import Redis

/// `markov train --guild G FILE…`: imports history through the event log, then waits until it is applied.
struct Train: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import message history files into a guild's chain.",
        discussion: """
            Reads DiscordChatExporter JSON, the reference bot's JSON ([{"message": "…"}]) or plain text (one \
            message per line), appends every message to the guild's event stream, and applies them with a \
            trainer in this process (other trainers help if they run). Importing the same file twice changes \
            nothing. Imported messages count as coming from a channel enabled for learning.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "The guild (Discord id) to train.") var guild: String
    @Argument(help: "History files.") var files: [String]
    @Flag(help: "Only append to the stream; leave applying to running trainers.") var noApply = false

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.train")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        try await context.log.ensureGroup("trainers")
        let before = try await context.store.totals(guild: guild)["messages", default: 0]

        var events: [ChainEvent] = []
        for file in self.files {
            let (format, fileEvents) = try HistoryImporter.events(fromFile: file, guild: guild)
            FileHandle.standardError.write(Data("\(file): \(fileEvents.count) messages (\(format.rawValue))\n".utf8))
            events += fileEvents
        }
        let queued = ProgressMeter(label: "queued ", total: events.count)
        var sent = 0
        for chunk in stride(from: 0, to: events.count, by: 1000) {
            try await context.log.append(Array(events[chunk..<min(chunk + 1000, events.count)]))
            sent = min(chunk + 1000, events.count)
            queued.update(sent)
        }
        queued.finish(sent)
        guard !self.noApply else { return }

        var configuration = MarkovChains.Trainer.Configuration(consumer: RoleContext.consumerName(role: "train"))
        configuration.partitions = context.configuration.partitions
        configuration.commandPrefix = context.configuration.commandPrefix
        configuration.block = .milliseconds(200)
        let trainer = MarkovChains.Trainer(store: context.store, log: context.log, configuration: configuration, logger: context.logger)
        let partition = context.log.keys.partition(of: guild)
        let applying = ProgressMeter(label: "applied", total: events.count)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await trainer.run() }
            // Done when the group has read everything in the guild's partition and nothing is pending.
            while true {
                let backlog = try await context.log.backlog(group: "trainers", partitions: [partition])
                applying.update(max(0, events.count - backlog))
                if backlog == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            group.cancelAll()
        }
        applying.finish(events.count)
        let totals = try await context.store.totals(guild: guild)
        let learnt = totals["messages", default: 0] - before
        print(
            "learnt \(learnt) new messages (\(events.count - learnt) already known or skipped); guild \(guild) now has "
                + "\(totals["messages", default: 0]) messages, \(totals["states", default: 0]) states, "
                + "\(totals["transitions", default: 0]) distinct transitions"
        )
    }
}
