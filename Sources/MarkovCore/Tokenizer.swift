/// Turns a message into the tokens a chain learns: runs of non-whitespace, split on runs of Unicode whitespace and
/// of the other ASCII control characters (so that no token holds one: the chain store marks the states of a scope,
/// such as age-restricted text, with a leading control byte, ``ChainScope``).
///
/// Case and punctuation are kept (as the reference bots do). User mentions written `<@!id>` become `<@id>`, so the
/// two spellings are one token. Text arrives as Swift `String`s, which hold valid Unicode only: invalid UTF-8 has
/// already been replaced with U+FFFD where the bytes were decoded (``Tokenizer/tokens(utf8:)``). Tokens never
/// contain whitespace, which is what lets the chain store join them with a space and separate fields with tabs
/// and newlines.
public enum Tokenizer {
    /// The tokens of `text`.
    public static func tokens(_ text: String) -> [String] {
        var text = text
        return text.withUTF8 { Self.tokens(validUTF8: $0) }
    }

    /// Splits valid UTF-8: ASCII bytes are classified directly, other scalars by their Unicode properties.
    private static func tokens(validUTF8 bytes: UnsafeBufferPointer<UInt8>) -> [String] {
        var tokens: [String] = []
        var start = -1
        var index = 0
        let count = bytes.count
        func flush(_ end: Int) {
            guard start >= 0 else { return }
            let token = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
            tokens.append(Self.normalized(token))
            start = -1
        }
        while index < count {
            let byte = bytes[index]
            if byte < 0x80 {
                // ASCII's Unicode whitespace (tab, newline, vertical tab, form feed, carriage return, space) and
                // the other control characters.
                if byte <= 0x20 || byte == 0x7F {
                    flush(index)
                } else if start < 0 {
                    start = index
                }
                index += 1
                continue
            }
            // A multi-byte scalar: its length from the lead byte.
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2
            var scalarValue = UInt32(byte) & (length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07)
            for offset in 1..<length where index + offset < count {
                scalarValue = scalarValue << 6 | UInt32(bytes[index + offset] & 0x3F)
            }
            if let scalar = Unicode.Scalar(scalarValue), scalar.properties.isWhitespace {
                flush(index)
            } else if start < 0 {
                start = index
            }
            index += length
        }
        flush(count)
        return tokens
    }

    /// The tokens of raw bytes; invalid UTF-8 becomes U+FFFD.
    public static func tokens(utf8 bytes: some Collection<UInt8>) -> [String] {
        Self.tokens(String(decoding: bytes, as: UTF8.self))
    }

    /// Whether the bytes `<@!` occur in a token (a byte scan: much faster than a generic substring search).
    private static func hasMentionBang(_ token: String) -> Bool {
        var token = token
        return token.withUTF8 { bytes in
            guard bytes.count >= 3 else { return false }
            for index in 0..<(bytes.count - 2) where bytes[index] == 0x3C && bytes[index + 1] == 0x40 && bytes[index + 2] == 0x21 {
                return true
            }
            return false
        }
    }

    /// `<@!123>` → `<@123>`; other tokens unchanged (a mention inside a longer token is normalised too).
    static func normalized(_ token: String) -> String {
        guard Self.hasMentionBang(token) else { return token }
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
