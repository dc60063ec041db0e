/// Turns a message into the tokens a chain learns: runs of non-whitespace, split on runs of Unicode whitespace.
///
/// Case and punctuation are kept (as the reference bots do). User mentions written `<@!id>` become `<@id>`, so the
/// two spellings are one token. Text arrives as Swift `String`s, which hold valid Unicode only: invalid UTF-8 has
/// already been replaced with U+FFFD where the bytes were decoded (``Tokenizer/tokens(utf8:)``). Tokens never
/// contain whitespace, which is what lets the chain store join them with a space and separate fields with tabs
/// and newlines.
public enum Tokenizer {
    /// The tokens of `text`.
    public static func tokens(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.properties.isWhitespace {
                if !current.isEmpty {
                    tokens.append(Self.normalized(String(current)))
                    current = String.UnicodeScalarView()
                }
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { tokens.append(Self.normalized(String(current))) }
        return tokens
    }

    /// The tokens of raw bytes; invalid UTF-8 becomes U+FFFD.
    public static func tokens(utf8 bytes: some Collection<UInt8>) -> [String] {
        Self.tokens(String(decoding: bytes, as: UTF8.self))
    }

    /// `<@!123>` → `<@123>`; other tokens unchanged (a mention inside a longer token is normalised too).
    static func normalized(_ token: String) -> String {
        guard token.contains("<@!") else { return token }
        var result = ""
        var rest = Substring(token)
        while let range = rest.firstRange(of: "<@!") {
            let afterBang = rest[range.upperBound...]
            let digits = afterBang.prefix(while: { $0.isASCII && $0.isNumber })
            let closes = afterBang.dropFirst(digits.count).first == ">"
            result += rest[..<range.lowerBound]
            if !digits.isEmpty && closes {
                result += "<@" + digits
                rest = afterBang[digits.endIndex...]
            } else {
                result += "<@!"
                rest = afterBang
            }
        }
        return result + rest
    }
}
