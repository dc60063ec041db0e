/// A behaviour that can be turned on for some guilds before all of them (a canary rollout), by `markov flags`.
///
/// The flags a role knows are listed in ``FeatureFlag/known``; a flag stored in Redis that a role does not know
/// (set by a newer version) is ignored by it.
public struct FeatureFlag: Sendable, Hashable, CustomStringConvertible {
    /// The name stored in Redis and given to `markov flags`: lowercase words joined by `-`.
    public let name: String
    /// What turning it on changes, for `markov flags`.
    public let summary: String

    public init(name: String, summary: String) {
        self.name = name
        self.summary = summary
    }

    public var description: String { self.name }

    /// Strips what a guild's training filters name (links and invites unless the guild chose otherwise) from
    /// messages before they are learnt, and offers `/filters`. Off: messages are learnt whole, as before.
    public static let trainingFilters = FeatureFlag(
        name: "training-filters",
        summary: "strip links, invites and what else the guild's training filters name before learning; offer /filters"
    )

    /// Every flag this version knows.
    public static let known: [FeatureFlag] = [.trainingFilters]

    /// The known flag of that name.
    public static func named(_ name: String) -> FeatureFlag? { Self.known.first { $0.name == name } }
}

/// Who a flag is on for: everybody, or the listed guilds and a stable share of the others.
///
/// Stored as text (`markov:flags`, flag name → rollout): `off`, `all`, a percentage such as `5%` or `0.5%`, guild
/// ids, or a percentage followed by guild ids (`5% 123 456`). A guild is in the percentage when its bucket, a stable
/// hash of the flag's name and the guild id in 0..<10000, is below the percentage in hundredths: the same guild
/// stays in as the percentage grows, and each flag draws its own guilds.
public struct Rollout: Sendable, Hashable, CustomStringConvertible {
    /// On for every guild.
    public var everyone: Bool
    /// On for guilds whose bucket is below this, in hundredths of a percent (0...10000).
    public var basisPoints: Int
    /// On for these guilds whatever the percentage.
    public var guilds: Set<Snowflake>

    public init(everyone: Bool = false, basisPoints: Int = 0, guilds: Set<Snowflake> = []) {
        self.everyone = everyone
        self.basisPoints = max(0, min(10_000, basisPoints))
        self.guilds = guilds
    }

    /// On for nobody.
    public static let off = Rollout()
    /// On for everybody.
    public static let all = Rollout(everyone: true)

    /// Whether the flag named `flag` is on for `guild`.
    public func includes(_ guild: Snowflake, flag: String) -> Bool {
        self.everyone || self.guilds.contains(guild)
            || (self.basisPoints > 0 && Self.bucket(guild, flag: flag) < self.basisPoints)
    }

    /// The guild's place in 0..<10000 for a flag: FNV-1a of `<flag>:<guild id>`, mixed (splitmix64's finalizer)
    /// so that consecutive ids spread evenly.
    public static func bucket(_ guild: Snowflake, flag: String) -> Int {
        var hash = StableHash()
        hash.combine(flag.utf8)
        hash.combine(CollectionOfOne(UInt8(ascii: ":")))
        hash.combine(guild.rawValue.utf8)
        var value = hash.value
        value = (value ^ (value >> 30)) &* 0xbf58_476d_1ce4_e5b9
        value = (value ^ (value >> 27)) &* 0x94d0_49bb_1331_11eb
        value ^= value >> 31
        return Int(value % 10_000)
    }

    /// Whether it is on for nobody.
    public var isOff: Bool { !self.everyone && self.basisPoints == 0 && self.guilds.isEmpty }

    /// The percentage of guilds it is on for by hash (100 for everybody), not counting listed guilds.
    public var percent: Double { self.everyone ? 100 : Double(self.basisPoints) / 100 }

    /// The stored text.
    public var description: String {
        if self.everyone { return "all" }
        if self.isOff { return "off" }
        var parts: [String] = []
        if self.basisPoints > 0 { parts.append(Self.percentText(self.basisPoints) + "%") }
        parts += self.guilds.sorted().map(\.rawValue)
        return parts.joined(separator: " ")
    }

    private static func percentText(_ basisPoints: Int) -> String {
        let whole = basisPoints / 100, fraction = basisPoints % 100
        if fraction == 0 { return String(whole) }
        return fraction % 10 == 0 ? "\(whole).\(fraction / 10)" : "\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// Reads the stored text; throws, saying why, when it is not a rollout.
    public init(parsing text: String) throws(RolloutError) {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" })
        if words.count == 1, words[0] == "all" {
            self = .all
            return
        }
        if words.isEmpty || (words.count == 1 && words[0] == "off") {
            self = .off
            return
        }
        var rollout = Rollout()
        for (index, word) in words.enumerated() {
            if word.hasSuffix("%") {
                guard index == 0, let basisPoints = Self.basisPoints(word.dropLast()) else {
                    throw RolloutError("'\(word)' is not a percentage from 0% to 100% (at most two decimals) at the start")
                }
                rollout.basisPoints = basisPoints
            } else if let guild = Snowflake(word) {
                rollout.guilds.insert(guild)
            } else {
                throw RolloutError("'\(word)' is neither a percentage nor a guild id (a rollout is off, all, N%, guild ids, or N% then guild ids)")
            }
        }
        self = rollout
    }

    /// A percentage with at most two decimals as hundredths; `nil` outside 0...100.
    public static func basisPoints(_ text: some StringProtocol) -> Int? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty, parts[0].allSatisfy(\.isASCII), let whole = Int(parts[0]), whole >= 0
        else { return nil }
        var hundredths = 0
        if parts.count == 2 {
            let decimals = parts[1]
            guard (1...2).contains(decimals.count), decimals.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(decimals)
            else { return nil }
            hundredths = decimals.count == 1 ? value * 10 : value
        }
        let total = whole * 100 + hundredths
        return total <= 10_000 ? total : nil
    }
}

/// Why a rollout's text was refused.
public struct RolloutError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
