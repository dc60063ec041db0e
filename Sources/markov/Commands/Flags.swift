import ArgumentParser
import MarkovChains
import MarkovCore
import Redis

/// `markov flags [NAME] [--guilds …] [--percent P] [--all] [--off]`: lists feature flags, or changes one.
struct Flags: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List feature flags, or turn one on for some guilds, a share of guilds, or all of them.",
        discussion: """
            Flags live in Redis (`markov:flags`); every role reads them again within MARKOV_FLAGS_TTL (5 s by \
            default). A percentage picks guilds by a stable hash of the flag and the guild id, so a guild that is in \
            stays in as the percentage grows. --guilds and --percent combine: the listed guilds and the share. \
            Examples: `markov flags training-filters --guilds 123,456`, then `--percent 5`, then `--all`.
            """
    )

    @OptionGroup var options: GlobalOptions
    @Argument(help: "The flag to change (none: list them all).") var name: String?
    @Option(help: "On for these guilds (comma-separated or repeated; replaces the list; \"none\" empties it).")
    var guilds: [String] = []
    @Option(help: "On for this percentage of guilds (0 to 100, two decimals at most), beside the listed guilds.")
    var percent: String?
    @Flag(help: "On for every guild.") var all = false
    @Flag(help: "Off for every guild.") var off = false

    func validate() throws {
        let changes = (self.guilds.isEmpty && self.percent == nil ? 0 : 1) + (self.all ? 1 : 0) + (self.off ? 1 : 0)
        if changes > 1 { throw ValidationError("--all, --off, and --guilds/--percent do not go together") }
        if changes == 1 && self.name == nil { throw ValidationError("name the flag to change (`markov flags` lists them)") }
        if let name, FeatureFlag.named(name) == nil {
            throw ValidationError("no flag named '\(name)'; flags: \(FeatureFlag.known.map(\.name).joined(separator: ", "))")
        }
    }

    func run() async throws {
        LoggingSetup.once
        let context = try await RoleContext(options: self.options, label: "markov.flags")
        defer { context.redis.shutdown() }
        let stored = try await FeatureFlags.read(context.redis)
        if let name, let flag = FeatureFlag.named(name), self.all || self.off || !self.guilds.isEmpty || self.percent != nil {
            var rollout = (try? Rollout(parsing: stored[name] ?? "off")) ?? .off
            if self.all { rollout = .all }
            if self.off { rollout = .off }
            if !self.guilds.isEmpty {
                rollout.everyone = false
                rollout.guilds = []
                for word in self.guilds.flatMap({ $0.split(separator: ",") }) where word != "none" {
                    rollout.guilds.insert(try snowflake(String(word), "--guilds"))
                }
            }
            if let percent {
                guard let basisPoints = Rollout.basisPoints(percent.hasSuffix("%") ? String(percent.dropLast()) : percent) else {
                    throw ValidationError("--percent is a percentage from 0 to 100 with at most two decimals, not '\(percent)'")
                }
                rollout.everyone = false
                rollout.basisPoints = basisPoints
            }
            try await FeatureFlags.set(flag, to: rollout, redis: context.redis)
            print("\(flag.name) is now \(rollout); every role sees it within its flag cache time (MARKOV_FLAGS_TTL)")
            return
        }
        for flag in FeatureFlag.known where self.name == nil || self.name == flag.name {
            print("\(flag.name): \(stored[flag.name] ?? "off")")
            print("  \(flag.summary)")
        }
        for (name, text) in stored.sorted(by: { $0.key < $1.key }) where FeatureFlag.named(name) == nil && self.name == nil {
            print("\(name): \(text)  (unknown to this version: ignored by its roles)")
        }
    }
}
