/// What a guild remembers of one message (`{g:G}:m`, message id → record), so that an edit or a delete removes
/// exactly what was learnt and a replayed or re-imported message is not learnt twice:
///
/// - `author<TAB>tokens`: learnt whole, with the tokens joined by single spaces;
/// - `author<TAB>filters<TAB>tokens`: the message's tokens, of which what the filters (``ContentFilters/letters``)
///   leave was learnt (perhaps nothing): `markov relearn` can learn them again under other filters;
/// - either of those after `n`: learnt into the age-restricted scope (``ChainScope/ageRestricted``);
/// - `-`: deleted (or its author forgotten): a late create cannot bring it back;
/// - `~tokens`: edited before its create arrived (a backfill reads old messages after live edits): the create
///   learns these tokens instead of its own.
public enum MessageRecord: Sendable, Hashable {
    case learnt(author: String, tokens: [String], filters: ContentFilters, scope: ChainScope)
    case deleted
    case editedBeforeCreate(tokens: [String])

    /// A message learnt whole, in the guild's scope.
    public static func learnt(author: String, tokens: [String]) -> MessageRecord {
        .learnt(author: author, tokens: tokens, filters: [], scope: .guild)
    }

    /// A message learnt in the guild's scope.
    public static func learnt(author: String, tokens: [String], filters: ContentFilters) -> MessageRecord {
        .learnt(author: author, tokens: tokens, filters: filters, scope: .guild)
    }

    /// What was learnt of a learnt message: its tokens, less what its filters stripped.
    public var learntTokens: [String] {
        guard case .learnt(_, let tokens, let filters, _) = self else { return [] }
        return filters.apply(to: tokens)
    }

    /// The scope a learnt message was learnt into.
    public var scope: ChainScope {
        guard case .learnt(_, _, _, let scope) = self else { return .guild }
        return scope
    }

    /// Whether stored record bytes are a learnt message of `user` (in either scope).
    public static func isLearnt(_ bytes: some Collection<UInt8>, by user: String) -> Bool {
        var rest = bytes[...]
        if rest.first == UInt8(ascii: "n") { rest = rest.dropFirst() }
        let author = user.utf8
        guard rest.count > author.count, rest.starts(with: author) else { return false }
        return rest[rest.index(rest.startIndex, offsetBy: author.count)] == 0x09
    }

    /// Reads a record; `nil` when it is malformed.
    public init?(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return nil }
        if first == UInt8(ascii: "n") {
            guard case .learnt(let author, let tokens, let filters, .guild)? = MessageRecord(Array(bytes.dropFirst())) else { return nil }
            self = .learnt(author: author, tokens: tokens, filters: filters, scope: .ageRestricted)
            return
        }
        if bytes == [UInt8(ascii: "-")] {
            self = .deleted
            return
        }
        if first == UInt8(ascii: "~") {
            self = .editedBeforeCreate(tokens: Self.split(bytes.dropFirst()))
            return
        }
        guard let tab = bytes.firstIndex(of: 0x09) else { return nil }
        let author = String(decoding: bytes[..<tab], as: UTF8.self)
        guard !author.isEmpty, author.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        let rest = bytes[(tab + 1)...]
        guard let second = rest.firstIndex(of: 0x09) else {
            self = .learnt(author: author, tokens: Self.split(rest), filters: [], scope: .guild)
            return
        }
        guard let filters = ContentFilters(letters: String(decoding: rest[..<second], as: UTF8.self)) else { return nil }
        self = .learnt(author: author, tokens: Self.split(bytes[(second + 1)...]), filters: filters, scope: .guild)
    }

    /// The stored bytes.
    public var encoded: [UInt8] {
        switch self {
        case .learnt(let author, let tokens, let filters, .ageRestricted):
            [UInt8(ascii: "n")] + MessageRecord.learnt(author: author, tokens: tokens, filters: filters, scope: .guild).encoded
        case .learnt(let author, let tokens, let filters, .guild) where filters.isEmpty: Array((author + "\t" + tokens.joined(separator: " ")).utf8)
        case .learnt(let author, let tokens, let filters, .guild): Array((author + "\t" + filters.letters + "\t" + tokens.joined(separator: " ")).utf8)
        case .deleted: [UInt8(ascii: "-")]
        case .editedBeforeCreate(let tokens): Array(("~" + tokens.joined(separator: " ")).utf8)
        }
    }

    private static func split(_ bytes: some Collection<UInt8>) -> [String] {
        bytes.split(separator: 0x20).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The content hash of a message's tokens: the first 16 hex digits of SHA-1 of the tokens joined by spaces
    /// (`{g:G}:h`, so generation can refuse to repeat a message verbatim).
    public static func contentHash(_ tokens: [String]) -> String {
        SHA1.prefixHex16(tokens.joined(separator: " ").utf8)
    }
}
