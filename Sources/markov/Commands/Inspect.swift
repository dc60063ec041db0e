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
    @Flag(help: "Read the guild's whole chain and check it: layout, bucket placement, alias tables, and the totals against the meta (run it while the guild is idle; exits 1 on a problem).")
    var check = false

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.inspect")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        if self.check {
            try await self.checkChain(guild, context: context)
            return
        }
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

    private func checkChain(_ guild: Snowflake, context: RoleContext) async throws {
        let check = ChainCheck(redis: context.redis, guild: guild, stateSize: context.configuration.stateSize)
        let meter = ProgressMeter(label: "checking guild \(guild)", total: 0, unit: "bucket hashes")
        var read = (0, 0)
        let report = try await check.run { done, total in
            read = (done, total)
            meter.update(done, total: total)
        }
        meter.finish(read.0, total: read.1)
        print("guild \(guild): \(report.states) states (\(report.bigStates) big), \(report.transitions) distinct transitions, count \(report.count)")
        if report.problems.isEmpty {
            print("no problems found")
            return
        }
        for problem in report.problems { print("  problem: \(problem)") }
        if report.unlisted > 0 { print("  and \(report.unlisted) more") }
        throw ExitCode(1)
    }
}
