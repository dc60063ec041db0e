/// An entry of a guild's blocklist (`/blocklist`, `markov settings --block/--unblock`): a token the bot never
/// says, or a simple wildcard: `*x` (tokens ending in x), `x*` (starting with x), `*x*` (containing x). Matched on
/// whole tokens, lowercased (ASCII letters are case-insensitive; other letters match as given in lowercase). The
/// sampler in Redis (`markov_generate`) skips blocked tokens; docs/chain-store.md says how that stays exact.
public struct BlockEntry: Sendable, Hashable, CustomStringConvertible {
    /// The entry as stored: lowercased, with its `*`s.
    public let text: String

    /// The longest entry, in characters.
    public static let maxLength = 100
    /// The most entries a guild may have.
    public static let maxEntries = 1000

    public struct InvalidEntry: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Checks and normalizes an entry, with a sentence for people when it cannot be one.
    public init(_ text: some StringProtocol) throws(InvalidEntry) {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw InvalidEntry(description: "a blocked word cannot be empty") }
        guard trimmed.count <= Self.maxLength else {
            throw InvalidEntry(description: "a blocked word is at most \(Self.maxLength) characters; this one has \(trimmed.count)")
        }
        guard !trimmed.unicodeScalars.contains(where: { $0.value == 0 || $0.properties.isWhitespace }) else {
            throw InvalidEntry(description: "a blocked word is one token: no spaces or NUL characters (\"\(trimmed.prefix(40))\")")
        }
        var core = trimmed
        while core.first == "*" { core.removeFirst() }
        while core.last == "*" { core.removeLast() }
        guard !core.isEmpty else { throw InvalidEntry(description: "a blocked word needs a letter besides the `*`s") }
        guard !core.contains("*") else {
            throw InvalidEntry(description: "`*` may stand only at the start or the end of a blocked word (\"\(trimmed)\")")
        }
        let leading = trimmed.hasPrefix("*") ? "*" : ""
        let trailing = trimmed.hasSuffix("*") ? "*" : ""
        self.text = leading + core.lowercased() + trailing
    }

    /// Whether the entry blocks a token (the same rule as the sampler's).
    public func blocks(_ token: String) -> Bool {
        guard !token.isEmpty else { return false }
        let token = String(token.unicodeScalars.map { $0.isASCII ? Character(String($0).lowercased()) : Character($0) })
        switch (self.text.hasPrefix("*"), self.text.hasSuffix("*")) {
        case (true, true): return token.contains(self.text.dropFirst().dropLast())
        case (true, false): return token.hasSuffix(self.text.dropFirst())
        case (false, true): return token.hasPrefix(self.text.dropLast())
        case (false, false): return token == self.text
        }
    }

    public var description: String { self.text }
}

extension StringProtocol {
    fileprivate func trimmingWhitespace() -> Substring {
        var text = Substring(self)
        while text.first?.isWhitespace == true { text.removeFirst() }
        while text.last?.isWhitespace == true { text.removeLast() }
        return text
    }
}
