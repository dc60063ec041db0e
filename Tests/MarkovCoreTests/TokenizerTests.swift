@testable import MarkovCore
import Testing

@Suite("Tokenizer")
struct TokenizerTests {
    @Test("splits on runs of Unicode whitespace, keeps case and punctuation")
    func splitting() {
        #expect(Tokenizer.tokens("Hello,  World!\tHow\nare you?") == ["Hello,", "World!", "How", "are", "you?"])
        #expect(Tokenizer.tokens("a\u{00A0}b\u{2003}c\u{3000}d") == ["a", "b", "c", "d"])
        #expect(Tokenizer.tokens("   ").isEmpty)
        #expect(Tokenizer.tokens("") == [])
        #expect(Tokenizer.tokens("one") == ["one"])
    }

    @Test("mentions with ! are normalised")
    func mentions() {
        #expect(Tokenizer.tokens("hi <@!123> and <@456>") == ["hi", "<@123>", "and", "<@456>"])
        #expect(Tokenizer.tokens("<@!12>,<@!x>") == ["<@12>,<@!x>"])
    }

    @Test("ASCII control bytes split; other odd bytes stay inside tokens; invalid UTF-8 becomes U+FFFD")
    func oddBytes() {
        #expect(Tokenizer.tokens("a{b}c \u{0}nul \u{200F}rtl 🎉") == ["a{b}c", "nul", "\u{200F}rtl", "🎉"])
        #expect(Tokenizer.tokens("a\u{1}b\u{7F}c\u{1B}d") == ["a", "b", "c", "d"])
        #expect(Tokenizer.tokens(utf8: [0x61, 0xFF, 0x62, 0x20, 0x63]) == ["a\u{FFFD}b", "c"])
    }

    @Test("a 4000-character message is tokenized whole")
    func longMessage() {
        let text = String(repeating: "word ", count: 800)
        #expect(Tokenizer.tokens(text).count == 800)
    }
}

@Suite("Snowflakes, events, filter, hashes")
struct CoreTests {
    @Test("snowflakes are 1 to 20 digits, nothing else")
    func snowflakes() {
        #expect(Snowflake("123")?.rawValue == "123")
        #expect(Snowflake("") == nil)
        #expect(Snowflake("12a") == nil)
        #expect(Snowflake("{g:1}") == nil)
        #expect(Snowflake("123456789012345678901") == nil)
    }

    @Test("events round-trip through stream fields")
    func eventRoundTrip() throws {
        let event = ChainEvent(
            kind: .create, source: .gateway, guildID: Snowflake("1")!, channelID: Snowflake("2"), messageID: "3",
            authorID: Snowflake("4"), authorFlags: [.bot], messageType: 19, content: "hi {there}\u{0}",
            attachments: ["https://cdn/x.png", "https://cdn/y.png"], timestamp: 1_700_000_000_000
        )
        let fields = Dictionary(uniqueKeysWithValues: event.fields)
        #expect(try ChainEvent(fields: fields) == event)
        let bulk = ChainEvent(kind: .deleteBulk, source: .gateway, guildID: Snowflake("1")!, messageIDs: ["5", "6"])
        #expect(try ChainEvent(fields: Dictionary(uniqueKeysWithValues: bulk.fields)) == bulk)
    }

    @Test("malformed entries are decoding errors that name the problem")
    func malformed() {
        #expect(throws: ChainEvent.DecodingError.self) { try ChainEvent(fields: [:]) }
        #expect(throws: ChainEvent.DecodingError.self) {
            try ChainEvent(fields: ["v": Array("9".utf8), "kind": Array("create".utf8), "guild": Array("1".utf8)])
        }
        #expect(throws: ChainEvent.DecodingError.self) {
            try ChainEvent(fields: ["v": Array("1".utf8), "kind": Array("create".utf8), "guild": Array("{g:2}".utf8), "id": [0x31]])
        }
        #expect(throws: ChainEvent.DecodingError.self) {
            try ChainEvent(fields: ["v": Array("1".utf8), "kind": Array("create".utf8), "guild": Array("1".utf8)])
        }
    }

    @Test("the filter skips bots, webhooks, system messages, commands and empty text")
    func filter() {
        let filter = TrainingFilter(commandPrefix: "!mark")
        #expect(filter.skipReason(authorFlags: [], messageType: 0, tokens: ["hi"]) == nil)
        #expect(filter.skipReason(authorFlags: [], messageType: 19, tokens: ["hi"]) == nil)
        #expect(filter.skipReason(authorFlags: [.bot], messageType: 0, tokens: ["hi"]) == .botAuthor)
        #expect(filter.skipReason(authorFlags: [.webhook], messageType: 0, tokens: ["hi"]) == .webhook)
        #expect(filter.skipReason(authorFlags: [], messageType: 7, tokens: ["hi"]) == .systemMessage)
        #expect(filter.skipReason(authorFlags: [], messageType: 0, tokens: ["!MARK", "debug"]) == .command)
        #expect(filter.skipReason(authorFlags: [], messageType: 0, tokens: []) == .empty)
    }

    @Test("the byte-level tokenizer splits where Unicode's whitespace property says and on every ASCII control")
    func matchesUnicodeWhitespace() {
        // The reference: split on every scalar whose White_Space property is true, and on U+0000–U+0020 and U+007F.
        func reference(_ text: String) -> [String] {
            var tokens: [String] = []
            var current = String.UnicodeScalarView()
            for scalar in text.unicodeScalars {
                if scalar.properties.isWhitespace || scalar.value <= 0x20 || scalar.value == 0x7F {
                    if !current.isEmpty { tokens.append(Tokenizer.normalized(String(current))); current = String.UnicodeScalarView() }
                } else {
                    current.append(scalar)
                }
            }
            if !current.isEmpty { tokens.append(Tokenizer.normalized(String(current))) }
            return tokens
        }
        let special: [Unicode.Scalar] = ["\u{85}", "\u{A0}", "\u{1680}", "\u{2000}", "\u{200A}", "\u{200B}", "\u{2028}", "\u{2029}",
                                         "\u{202F}", "\u{205F}", "\u{3000}", "\u{FEFF}", "\u{1C}", "\u{1F}", "é", "😀", "\u{10FFFF}"]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...40, using: &generator) {
                if Bool.random(using: &generator) {
                    scalars.append(Unicode.Scalar(UInt8.random(in: 0...127, using: &generator)))
                } else {
                    scalars.append(special.randomElement(using: &generator)!)
                }
            }
            let text = String(scalars) + (Bool.random(using: &generator) ? " <@!123> x<@!9>" : "")
            #expect(Tokenizer.tokens(text) == reference(text), "\(text.unicodeScalars.map { String($0.value, radix: 16) })")
        }
    }

    @Test("SHA-1 matches the standard test vectors")
    func sha1() {
        #expect(SHA1.hex("abc".utf8) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(SHA1.hex("".utf8) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(
            SHA1.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        )
        #expect(SHA1.prefix32("abc".utf8) == 0xa999_3e36)
        // Lengths around the block boundaries, where the padding spills into a second block.
        let vectors: [Int: String] = [
            55: "a617d006d1ca12671785098a19a87fe58443bde9", 56: "4ad5bb7ae3c4024768d364b77c52128ea3cffebe",
            63: "fc8a5ab77259625085ead3ec96515b3b8d933fad", 64: "93249d4c2f8903ebf41ac358473148ae6ddd7042",
            65: "cf2a63cc308225cf07b498d2309a01dd0df52f67", 119: "edd0f1133d0e4ca5f3e98bb7e0295f31d20d2cdb",
            120: "23a58eee587aa1f50d19a969ab36a3fe3e88c393", 200: "0e43b981f4ae2c16bc6a798920eb9f1490c3d7fc",
        ]
        for (length, digest) in vectors {
            let text = (0..<length).map { Character(Unicode.Scalar(UInt8(97 + $0 % 26))) }
            #expect(SHA1.hex(String(text).utf8) == digest, "\(length) bytes")
        }
        // A state's hash is the first 24 bits, as the Lua reads `tonumber(sha1hex(s):sub(1, 6), 16)`.
        #expect(SHA1.prefix24(" ".utf8) == 12_081_355)
        #expect(SHA1.prefixHex16("abc".utf8) == "a9993e364706816a")
    }
}
