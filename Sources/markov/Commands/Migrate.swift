import ArgumentParser
import Foundation
import MarkovChains
import MarkovCore
import Redis

/// `markov migrate`: upgrades every guild still in the earlier chain layout.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upgrade guilds written in the earlier chain layout to the current one.",
        discussion: """
            Finds every guild whose meta has no current layout (SCAN over every master), and asks each guild's \
            partition owner to upgrade it, in order with its messages (a trainer in this process does it where no \
            trainer owns the partition). Guilds keep answering during the upgrade, from the earlier layout until \
            the switch. Trainers also upgrade a guild by themselves on its first event.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Option(help: "Only this guild (Discord id).") var guild: String?

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.migrate")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        var guilds: [Snowflake] = []
        if let guild = self.guild {
            guilds = [try snowflake(guild, "--guild")]
        } else {
            for master in try await context.redis.masters() {
                var cursor = "0"
                repeat {
                    let reply = try await context.redis.send(RedisCommand("SCAN", .string(cursor), "MATCH", "{g:*}:meta", "COUNT", 1000), to: master)
                    cursor = reply.array?[0].string ?? "0"
                    for key in (reply.array?[1].array ?? []).compactMap(\.string) {
                        guard key.hasPrefix("{g:"), let close = key.firstIndex(of: "}"),
                              let id = Snowflake(key[key.index(key.startIndex, offsetBy: 3)..<close])
                        else { continue }
                        guilds.append(id)
                    }
                } while cursor != "0"
            }
        }
        var pending: [Snowflake] = []
        for guild in guilds {
            let layout = try await context.redis.send(RedisCommand("HGET", .string(ChainKeys(guild: guild).meta), "layout")).string
            if layout != String(ChainLayout.version) { pending.append(guild) }
        }
        print("\(guilds.count) guilds, \(pending.count) in an earlier layout")
        guard !pending.isEmpty else { return }
        let meter = ProgressMeter(label: "upgraded", total: pending.count, unit: "guilds")
        let commands = ChainCommands(log: context.log)
        let list = pending
        _ = try await context.withOwner(of: list) {
            for (index, guild) in list.enumerated() {
                try await commands.migrate(guild)
                meter.update(index + 1)
            }
            return true
        }
        meter.finish(pending.count)
    }
}
