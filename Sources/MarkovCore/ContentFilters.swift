/// What a guild strips from its messages before they are learnt (`/filters`, `markov settings --strip/--keep`).
///
/// Filters work on tokens, so that a message record can keep a message's tokens with the filters it was learnt
/// under, and an edit, a delete or `markov relearn` always knows exactly what was learnt: ``apply(to:)`` of the
/// recorded filters to the recorded tokens. A token is dropped whole when it holds what a filter names:
///
/// | filter | drops tokens holding | default |
/// |---|---|---|
/// | `links` | `http://…`, `https://…` | stripped |
/// | `invites` | `discord.gg/…`, `discord.com/invite/…`, `discordapp.com/invite/…` (with or without a scheme) | stripped |
/// | `emoji` | custom emoji `<:name:id>`, `<a:name:id>` | kept |
/// | `mentions` | `<@id>`, `<@!id>`, `<@&id>`, `<#id>` | kept (the bot never pings: replies allow no mentions) |
/// | `code` | code spans `` `…` ``, ` ``…`` ` and fences ` ```…``` `, across tokens | kept |
public struct ContentFilters: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let links = ContentFilters(rawValue: 1 << 0)
    public static let invites = ContentFilters(rawValue: 1 << 1)
    public static let emoji = ContentFilters(rawValue: 1 << 2)
    public static let mentions = ContentFilters(rawValue: 1 << 3)
    public static let code = ContentFilters(rawValue: 1 << 4)

    /// What a guild that chose nothing strips.
    public static let defaults: ContentFilters = [.links, .invites]

    /// Each filter with its name (as given to `--strip`/`--keep` and `/filters`) and its letter in message records.
    public static let named: [(filter: ContentFilters, name: String, letter: Character)] = [
        (.links, "links", "l"), (.invites, "invites", "i"), (.emoji, "emoji", "e"), (.mentions, "mentions", "m"), (.code, "code", "c"),
    ]

    /// The filter of a name (`links`, `invites`, `emoji`, `mentions`, `code`).
    public init?(name: some StringProtocol) {
        guard let entry = Self.named.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = entry.filter
    }

    /// The names, space-separated, or `none`: how the guild's setting is stored (`{g:G}:filters`).
    public var description: String {
        let names = Self.named.filter { self.contains($0.filter) }.map(\.name)
        return names.isEmpty ? "none" : names.joined(separator: " ")
    }

    /// Reads the stored setting; `nil` when it names something unknown.
    public init?(stored text: some StringProtocol) {
        var filters = ContentFilters()
        for word in text.split(separator: " ") where word != "none" {
            guard let filter = ContentFilters(name: word) else { return nil }
            filters.insert(filter)
        }
        self = filters
    }

    /// The letters in a message record (`""` for none).
    public var letters: String { String(Self.named.filter { self.contains($0.filter) }.map(\.letter)) }

    /// Reads record letters; `nil` for an unknown letter.
    public init?(letters: some StringProtocol) {
        var filters = ContentFilters()
        for letter in letters {
            guard let entry = Self.named.first(where: { $0.letter == letter }) else { return nil }
            filters.insert(entry.filter)
        }
        self = filters
    }

    /// The tokens left to learn.
    public func apply(to tokens: [String]) -> [String] {
        guard !self.isEmpty else { return tokens }
        let inCode = self.contains(.code) ? Self.codeTokens(tokens) : []
        var kept: [String] = []
        kept.reserveCapacity(tokens.count)
        let linksOrInvites = self.contains(.links) || self.contains(.invites)
        for (index, token) in tokens.enumerated() {
            if inCode.contains(index) { continue }
            // Every link and invite holds a `/`: most tokens are passed over on that one scan.
            if linksOrInvites, token.utf8.contains(UInt8(ascii: "/")) {
                let bytes = Array(token.utf8)
                if self.contains(.invites), Self.invitePrefixes.contains(where: { Self.contains(bytes, $0) }) { continue }
                if self.contains(.links), Self.linkSchemes.contains(where: { Self.contains(bytes, $0) }) { continue }
            }
            if self.contains(.emoji) || self.contains(.mentions), token.utf8.contains(UInt8(ascii: "<")) {
                let marks = Self.angleMarks(token)
                if self.contains(.emoji), marks.emoji { continue }
                if self.contains(.mentions), marks.mention { continue }
            }
            kept.append(token)
        }
        return kept
    }

    private static let invitePrefixes: [[UInt8]] = ["discord.gg/", "discord.com/invite/", "discordapp.com/invite/"].map { Array($0.utf8) }
    private static let linkSchemes: [[UInt8]] = ["http://", "https://"].map { Array($0.utf8) }

    /// Whether `bytes` contain `needle` (lowercase ASCII), ASCII letters compared case-insensitively.
    static func contains(_ bytes: [UInt8], _ needle: [UInt8]) -> Bool {
        guard bytes.count >= needle.count, let first = needle.first else { return needle.isEmpty }
        var start = 0
        while start + needle.count <= bytes.count {
            if Self.lower(bytes[start]) == first {
                var index = 1
                while index < needle.count, Self.lower(bytes[start + index]) == needle[index] { index += 1 }
                if index == needle.count { return true }
            }
            start += 1
        }
        return false
    }

    @inline(__always)
    private static func lower(_ byte: UInt8) -> UInt8 { byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte }

    /// Whether a token holds a custom emoji (`<:name:id>`, `<a:name:id>`) or a mention (`<@id>`, `<@!id>`,
    /// `<@&id>`, `<#id>`).
    static func angleMarks(_ token: String) -> (emoji: Bool, mention: Bool) {
        let bytes = Array(token.utf8)
        var emoji = false, mention = false
        func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
        func isNameByte(_ byte: UInt8) -> Bool { isDigit(byte) || ((byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A) || byte == 0x5F }
        /// The end of `digits>` starting at `index`, or nil.
        func idEnd(_ index: Int) -> Int? {
            var end = index
            while end < bytes.count, isDigit(bytes[end]) { end += 1 }
            return end > index && end < bytes.count && bytes[end] == UInt8(ascii: ">") ? end : nil
        }
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "<"), index + 1 < bytes.count else {
                index += 1
                continue
            }
            var cursor = index + 1
            switch bytes[cursor] {
            case UInt8(ascii: "@"):
                cursor += 1
                if cursor < bytes.count, bytes[cursor] == UInt8(ascii: "!") || bytes[cursor] == UInt8(ascii: "&") { cursor += 1 }
                if idEnd(cursor) != nil { mention = true }
            case UInt8(ascii: "#"):
                if idEnd(cursor + 1) != nil { mention = true }
            case UInt8(ascii: ":"), UInt8(ascii: "a"):
                if bytes[cursor] == UInt8(ascii: "a") { cursor += 1 }
                guard cursor < bytes.count, bytes[cursor] == UInt8(ascii: ":") else { break }
                cursor += 1
                let nameStart = cursor
                while cursor < bytes.count, isNameByte(bytes[cursor]) { cursor += 1 }
                if cursor > nameStart, cursor < bytes.count, bytes[cursor] == UInt8(ascii: ":"), idEnd(cursor + 1) != nil { emoji = true }
            default:
                break
            }
            index += 1
        }
        return (emoji, mention)
    }

    /// The indices of tokens that touch code: in the tokens joined by spaces, a run of N backticks opens code that
    /// the next run of exactly N backticks closes (Discord's inline code and fences); a run never closed is text.
    static func codeTokens(_ tokens: [String]) -> Set<Int> {
        // Each byte of the joined text with the token it belongs to (-1 for the joining spaces).
        var bytes: [UInt8] = []
        var owners: [Int] = []
        for (index, token) in tokens.enumerated() {
            if index > 0 {
                bytes.append(0x20)
                owners.append(-1)
            }
            for byte in token.utf8 {
                bytes.append(byte)
                owners.append(index)
            }
        }
        let tick = UInt8(ascii: "`")
        // The backtick runs: start and length.
        var runs: [(start: Int, length: Int)] = []
        var index = 0
        while index < bytes.count {
            if bytes[index] == tick {
                let start = index
                while index < bytes.count, bytes[index] == tick { index += 1 }
                runs.append((start, index - start))
            } else {
                index += 1
            }
        }
        var code = Set<Int>()
        var run = 0
        while run < runs.count {
            let open = runs[run]
            guard let close = runs[(run + 1)...].firstIndex(where: { $0.length == open.length }) else {
                run += 1
                continue
            }
            let end = runs[close].start + runs[close].length
            for position in open.start..<end where owners[position] >= 0 { code.insert(owners[position]) }
            run = close + 1
        }
        return code
    }
}
