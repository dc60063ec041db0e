import ArgumentParser
import MarkovChains
import MarkovCore
import Redis

/// `markov inspect --guild G [--state "w1 w2"]`: a guild's totals, or one state's table.
struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a guild's totals, or one state's successors and sampling table.",
        discussion: "A state is its words separated by spaces; leave words out at the start for the start of a message (--state ' I' is: a message starting with I)."
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "The guild (Discord id).") var guild: String
    @Option(help: "A state, its words separated by single spaces.") var state: String?

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.inspect")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        guard let state = self.state else {
            let totals = try await context.store.totals(guild: guild)
            print("guild \(guild)")
            for key in ["messages", "states", "transitions", "count", "rebuilds", "L", "p"] {
                print("  \(key): \(totals[key, default: 0])")
            }
            print("  listening in: \(try await context.store.listenChannels(guild: guild).joined(separator: ", "))")
            return
        }
        var tokens = state.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        while tokens.count < context.configuration.stateSize { tokens.insert("", at: 0) }
        let table = try await context.store.state(Array(tokens.suffix(context.configuration.stateSize)), guild: guild)
        print("state \"\(tokens.suffix(context.configuration.stateSize).joined(separator: " "))\": \(table.kind), in \(table.bucketKey)")
        let total = table.successors.reduce(0) { $0 + $1.count }
        for (token, count) in table.successors.sorted(by: { $0.count > $1.count }) {
            print("  \(token.isEmpty ? "<end>" : token)  \(count)  (\(total > 0 ? count * 100 / total : 0)%)")
        }
        for (name, value) in table.sampling { print("  \(name): \(value)") }
    }
}
