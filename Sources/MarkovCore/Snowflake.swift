/// A Discord snowflake (guild, channel, message or user id): 1 to 20 decimal digits.
///
/// Ids are the only untrusted text that ever reaches a Redis key name, and only after this check, so no id can
/// move a key to another guild's slot or key family.
public struct Snowflake: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The decimal digits.
    public let rawValue: String

    /// Accepts 1 to 20 ASCII digits; anything else is `nil`.
    public init?(_ text: some StringProtocol) {
        guard (1...20).contains(text.utf8.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return nil
        }
        self.rawValue = String(text)
    }

    /// The id as a number (snowflakes fit in 64 bits); 0 when it does not fit.
    public var value: UInt64 { UInt64(self.rawValue) ?? 0 }

    public var description: String { self.rawValue }

    /// Discord's epoch (2015-01-01) in milliseconds since the Unix epoch.
    public static let discordEpoch: Int64 = 1_420_070_400_000

    /// Milliseconds since the Unix epoch at which the id was made (its top 42 bits).
    public var timestamp: Int64 { Int64(self.value >> 22) + Self.discordEpoch }

    /// The smallest id made at `timestamp` (milliseconds since the Unix epoch), for "before"/"after" cursors.
    public init(timestamp: Int64) {
        self.rawValue = String(UInt64(max(0, timestamp - Self.discordEpoch)) << 22)
    }

    public static func < (lhs: Snowflake, rhs: Snowflake) -> Bool {
        lhs.rawValue.count != rhs.rawValue.count ? lhs.rawValue.count < rhs.rawValue.count : lhs.rawValue < rhs.rawValue
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = Snowflake(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a snowflake: \(text)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.rawValue)
    }
}
