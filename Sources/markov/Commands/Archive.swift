import ArgumentParser
import Foundation
import MarkovChains
import MarkovCore
import Redis

/// `markov export --guild G FILE`.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a guild's data to a portable file.",
        discussion: """
            The file (JSON Lines, versioned; docs/chain-store.md) holds the chain as Redis stores it, the message \
            records, the settings and the opt-outs, and restores with `markov restore` into any Redis or Redis \
            Cluster. It is written to FILE.partial and renamed when complete. A guild that learns during the export \
            gives a file that is not a snapshot: the command warns, and exit code 3 says so.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "The guild (Discord id).") var guild: String
    @Argument(help: "The file to write.") var file: String

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.export")
        defer { context.redis.shutdown() }
        let partial = self.file + ".partial"
        guard FileManager.default.createFile(atPath: partial, contents: nil), let handle = FileHandle(forWritingAtPath: partial) else {
            throw ValidationError("cannot write \(partial)")
        }
        let meter = ProgressMeter(label: "exported", total: 0, unit: "keys")
        var buffer: [UInt8] = []
        let summary: GuildExport.Summary
        do {
            summary = try await GuildExport(redis: context.redis, guild: guild).run(
                stateSize: context.store.stateSize,
                write: { line in
                    buffer += line
                    buffer.append(0x0A)
                    if buffer.count >= 1 << 20 {
                        try handle.write(contentsOf: buffer)
                        buffer.removeAll(keepingCapacity: true)
                    }
                },
                progress: { done, total in meter.update(done, total: total) }
            )
            try handle.write(contentsOf: buffer)
            try handle.close()
            try? FileManager.default.removeItem(atPath: self.file)
            try FileManager.default.moveItem(atPath: partial, toPath: self.file)
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
        meter.finish(summary.keys, total: summary.keys)
        let size = (try? FileManager.default.attributesOfItem(atPath: self.file)[.size] as? Int) ?? 0
        print("exported guild \(guild): \(summary.header.messages) messages, \(summary.keys) keys, \(summary.lines + 1) lines, \(size) bytes to \(self.file)")
        if summary.changed {
            print("warning: guild \(guild) learnt while it was exported; the file may not be a consistent snapshot (export again when it is quiet)")
            throw ExitCode(3)
        }
    }
}

/// `markov restore FILE [--guild G]`.
struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a guild export back into Redis.",
        discussion: """
            The file is checked whole first (a file cut short, altered or from a newer version is refused and \
            nothing changes); then its keys go to the guild's partition owner through the event log, in parts \
            applied in order. The guild must hold no learnt messages (delete its data first); restoring the same \
            file again changes nothing, and a restore cut short completes when run again. Without a running \
            trainer, this command applies it itself.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Argument(help: "The file `markov export` wrote.") var file: String
    @Option(help: "Restore under this guild id instead of the one in the file.") var guild: String?

    func run() async throws {
        LoggingSetup.once
        let target = try self.guild.map { try snowflake($0, "--guild") }
        let checking = ProgressMeter(label: "checked", total: 0, unit: "bytes")
        let fileSize = (try? FileManager.default.attributesOfItem(atPath: self.file)[.size] as? Int) ?? 0
        let checked: GuildArchive.Checked
        do {
            checked = try GuildArchive.check(path: self.file) { checking.update($0, total: fileSize) }
        } catch let error as GuildArchive.FormatError {
            throw ValidationError(error.description)
        }
        checking.finish(checked.bytes, total: checked.bytes)
        let guild = target ?? checked.header.guild
        let context = try await RoleContext(options: self.options, label: "markov.restore")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        guard checked.header.stateSize == context.store.stateSize else {
            throw ValidationError("the file was trained with state size \(checked.header.stateSize); this system uses \(context.store.stateSize) (markov.state.size)")
        }
        // Refused here already when plainly so; the owner checks again, in order with the guild's messages.
        let meta = try await context.store.totals(guild: guild)
        let marks = try await context.redis.send(RedisCommand("HMGET", .string(ChainKeys(guild: guild).meta), "restoring", "restored")).array ?? []
        if marks.dropFirst().first?.string == checked.digest {
            print("guild \(guild) was restored from this file before; nothing to do")
            return
        }
        let records = try await context.redis.send(RedisCommand("EXISTS", .string(ChainKeys(guild: guild).messages))).int ?? 0
        if marks.first?.string != checked.digest, (meta["messages"] ?? 0) > 0 || (meta["states"] ?? 0) > 0 || records > 0 {
            throw ValidationError("guild \(guild) has learnt messages; delete its data first (markov delete-guild --guild \(guild)); nothing was changed")
        }
        let commands = ChainCommands(log: context.log)
        let meter = ProgressMeter(label: "restored", total: checked.bytes, unit: "bytes")
        let file = self.file
        let outcome = try await context.withOwner(of: [guild]) {
            try await commands.restore(guild: guild) { append in
                try await GuildArchive.parts(path: file, checked: checked) { parts, read in
                    try await append(parts)
                    meter.update(read, total: checked.bytes)
                }
            }
        }
        meter.finish(checked.bytes, total: checked.bytes)
        switch outcome {
        case .already:
            print("guild \(guild) was restored from this file before; nothing to do")
        case .restored(let keys):
            print("restored guild \(guild) from \(self.file): \(checked.header.messages) messages, \(keys) keys")
        }
    }
}
