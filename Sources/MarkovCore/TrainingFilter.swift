/// Which messages a chain learns from, decided from the event alone. (Whether the channel is enabled for
/// learning and whether the author opted out are guild settings, checked in Redis where they live.)
public struct TrainingFilter: Sendable {
    /// Messages starting with this (case-insensitively) are commands to the bot, not conversation.
    public var commandPrefix: String

    /// Makes a filter for a command prefix such as `!mark`.
    public init(commandPrefix: String = "!mark") {
        self.commandPrefix = commandPrefix
    }

    /// Why a message is not trained on.
    public enum Skip: String, Sendable, Hashable {
        case botAuthor = "bot author"
        case webhook = "webhook"
        case systemMessage = "system message"
        case command = "command prefix"
        case empty = "no text"
    }

    /// `nil` when the message should be learnt, otherwise the reason it is skipped.
    public func skipReason(authorFlags: ChainEvent.AuthorFlags, messageType: Int, tokens: [String]) -> Skip? {
        if authorFlags.contains(.bot) { return .botAuthor }
        if authorFlags.contains(.webhook) { return .webhook }
        if messageType != 0 && messageType != 19 { return .systemMessage }
        guard let first = tokens.first else { return .empty }
        if !self.commandPrefix.isEmpty, first.lowercased().hasPrefix(self.commandPrefix.lowercased()) {
            return .command
        }
        return nil
    }
}
