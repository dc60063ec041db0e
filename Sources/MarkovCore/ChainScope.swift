/// Which of a guild's chains a message is learnt into and a sentence drawn from. Both live in the guild's keys
/// (docs/chain-store.md): a state of a scope other than ``guild`` has its text prefixed by the scope's marker byte,
/// a control character no token holds (``Tokenizer``), so the scopes never share a state.
public enum ChainScope: Sendable, Hashable {
    /// Text learnt in channels open to everyone: said anywhere.
    case guild
    /// Text learnt in age-restricted (NSFW) channels and their threads: said only in age-restricted channels.
    case ageRestricted

    /// The bytes before a state's text.
    public var marker: [UInt8] {
        switch self {
        case .guild: []
        case .ageRestricted: [0x01]
        }
    }
}
