import ArgumentParser
import Foundation
import Logging
import MarkovChains
import MarkovCore
import Redis

/// `markov train --guild G FILE…`: imports history through the bulk lane of the event log, then waits until the
/// guild's partition owner has applied it.
struct Train: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import message history files into a guild's chain.",
        discussion: """
            Reads DiscordChatExporter JSON, the reference bot's JSON ([{"message": "…"}]) or plain text (one \
            message per line), a block at a time, appends every message to the bulk lane of the guild's \
            partition, and waits until the partition's owner has applied them: a running trainer, or a trainer \
            in this process when none owns the partition. Live messages are applied first. Importing the same \
            file twice changes nothing. Imported messages count as coming from a channel enabled for learning.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "The guild (Discord id) to train.") var guild: String
    @Argument(help: "History files.") var files: [String]
    @Flag(help: "Only append to the stream; leave applying to running trainers.") var noApply = false
    @Option(help: "Memory for the chain the trainer in this process keeps, in MiB (approximate; as `markov trainer --cache-mb`).")
    var cacheMB = 512

    func validate() throws {
        guard self.cacheMB >= 0 else { throw ValidationError("--cache-mb must not be negative") }
    }

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.train")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        try await context.log.ensureGroup("trainers", lanes: EventLog.Lane.allCases)
        let before = try await context.store.totals(guild: guild)["messages", default: 0]
        let files = self.files
        let log = context.log
        let noApply = self.noApply
        let import_ = { @Sendable () async throws -> Int in
            let tracker = ImportTracker(guild: guild, redis: context.redis)
            let meter = ProgressMeter(label: noApply ? "queued " : "applied", total: 0)
            for file in files {
                let queuedBefore = await tracker.count
                let summary = try await HistoryImporter.read(file: file, guild: guild) { events, bytesRead in
                    let ids = try await log.append(events, lane: .bulk)
                    await tracker.appended(ids)
                    let applied = noApply ? await tracker.count : try await tracker.applied()
                    // The whole file's messages are not known until it is read: project them from the share read,
                    // so that the percentage and the ETA are of the whole import.
                    let queued = await tracker.count
                    let read = Double(bytesRead) / Double(max(1, Self.size(file)))
                    let projected = read > 0 ? max(queued, Int(Double(queued - queuedBefore) / read) + queuedBefore) : queued
                    meter.update(applied, total: projected, detail: "\(Int(read * 100))% of \(file) read")
                }
                FileHandle.standardError.write(Data("\n\(file): \(summary.messages) messages (\(summary.format.rawValue))\n".utf8))
            }
            let total = await tracker.count
            if !noApply {
                while try await tracker.applied() < total {
                    meter.update(try await tracker.applied(), total: total)
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            meter.finish(total, total: total)
            return total
        }
        let total = noApply ? try await import_() : try await context.withOwner(of: [guild], cacheMB: self.cacheMB, import_)
        guard !noApply else { return }
        let totals = try await context.store.totals(guild: guild)
        let learnt = totals["messages", default: 0] - before
        print(
            "learnt \(learnt) new messages (\(total - learnt) already known or skipped); guild \(guild) now has "
                + "\(totals["messages", default: 0]) messages, \(totals["states", default: 0]) states, "
                + "\(totals["transitions", default: 0]) distinct transitions"
        )
    }

    static func size(_ file: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
    }
}

/// What an import appended, and how much of it the guild's owner has applied (its meta's `applied_bulk`, compared
/// with the entry ids appended: a few kept per chunk).
actor ImportTracker {
    let guild: Snowflake
    let redis: RedisClient
    private(set) var count = 0
    private var marks: [(id: String, count: Int)] = []

    init(guild: Snowflake, redis: RedisClient) {
        self.guild = guild
        self.redis = redis
    }

    func appended(_ ids: [String]) {
        self.count += ids.count
        if let last = ids.last { self.marks.append((last, self.count)) }
    }

    /// How many appended entries are applied (to the chunk).
    func applied() async throws -> Int {
        let reply = try await self.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: self.guild).meta), "applied_bulk"))
        guard let applied = reply.string.flatMap(Self.parse) else { return 0 }
        var done = 0
        for mark in self.marks {
            guard let id = Self.parse(mark.id), id <= applied else { break }
            done = mark.count
        }
        return done
    }

    private static func parse(_ id: String) -> (UInt64, UInt64)? {
        let parts = id.split(separator: "-")
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        return (ms, seq)
    }
}
