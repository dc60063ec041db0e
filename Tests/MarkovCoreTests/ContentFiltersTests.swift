@testable import MarkovCore
import Testing

@Suite("Training filters")
struct ContentFiltersTests {
    func stripped(_ filters: ContentFilters, _ text: String) -> String {
        filters.apply(to: Tokenizer.tokens(text)).joined(separator: " ")
    }

    @Test("links and invites in their real shapes")
    func linksAndInvites() {
        let text = "see https://example.com/a?b=1 and (http://x.org) or discord.gg/abc123 and https://discord.com/invite/xyz "
            + "discordapp.com/invite/q HTTPS://LOUD.example ok"
        #expect(stripped(.links, text) == "see and or discord.gg/abc123 and discordapp.com/invite/q ok")
        #expect(stripped(.invites, text) == "see https://example.com/a?b=1 and (http://x.org) or and HTTPS://LOUD.example ok")
        #expect(stripped(.defaults, text) == "see and or and ok")
        // Schemes and invite hosts in any ASCII case; a scheme anywhere in the token.
        #expect(stripped(.defaults, "Discord.GG/Abc hTtP://x (https://y) see:https://z é/ https:/") == "é/ https:/")
        // A word that only looks like one stays.
        #expect(stripped(.defaults, "http is a protocol; discord.gg is a domain") == "http is a protocol; discord.gg is a domain")
    }

    @Test("custom emoji and mentions")
    func emojiAndMentions() {
        let text = "hi <:kek:123456> <a:party:42>! <@1> <@!2> <@&3> <#4> <:notanemoji> <@x> :smile: <3"
        #expect(stripped(.emoji, text) == "hi <@1> <@2> <@&3> <#4> <:notanemoji> <@x> :smile: <3")
        #expect(stripped(.mentions, text) == "hi <:kek:123456> <a:party:42>! <:notanemoji> <@x> :smile: <3")
        #expect(stripped([], text) == Tokenizer.tokens(text).joined(separator: " "))
    }

    @Test("code spans and fences, across tokens; an unclosed backtick is text")
    func code() {
        #expect(stripped(.code, "use `let x = 1` here") == "use here")
        #expect(stripped(.code, "run ``a `b` c`` now") == "run now")
        #expect(stripped(.code, "before ```swift\nlet x = 1\nprint(x)\n``` after") == "before after")
        #expect(stripped(.code, "it`s a `b` c") == "c")
        #expect(stripped(.code, "a lone ` tick stays") == "a lone ` tick stays")
        #expect(stripped(.code, "```unclosed fence stays") == "```unclosed fence stays")
        #expect(stripped(.code, "x `y` z `w") == "x z `w")
    }

    @Test("names, stored setting and record letters round-trip")
    func encodings() {
        for raw in 0..<32 {
            let filters = ContentFilters(rawValue: raw)
            #expect(ContentFilters(stored: filters.description) == filters)
            #expect(ContentFilters(letters: filters.letters) == filters)
        }
        #expect(ContentFilters.defaults.description == "links invites")
        #expect(ContentFilters(stored: "links nonsense") == nil)
        #expect(ContentFilters(letters: "lz") == nil)
        #expect(ContentFilters(name: "Emoji") == .emoji)
    }

    @Test("message records keep the tokens with the filters they were learnt under; old records read as learnt whole")
    func records() {
        let tokens = ["see", "https://x.y", "ok"]
        let filtered = MessageRecord.learnt(author: "42", tokens: tokens, filters: [.links, .code])
        #expect(MessageRecord(filtered.encoded) == filtered)
        #expect(String(decoding: filtered.encoded, as: UTF8.self) == "42\tlc\tsee https://x.y ok")
        #expect(filtered.learntTokens == ["see", "ok"])
        let whole = MessageRecord.learnt(author: "42", tokens: tokens)
        #expect(String(decoding: whole.encoded, as: UTF8.self) == "42\tsee https://x.y ok")
        #expect(MessageRecord(whole.encoded)?.learntTokens == tokens)
        // Everything stripped: recorded, nothing learnt.
        let empty = MessageRecord.learnt(author: "7", tokens: ["https://only"], filters: .links)
        #expect(MessageRecord(empty.encoded) == empty && empty.learntTokens.isEmpty)
        #expect(MessageRecord(Array("42\tq\tx".utf8)) == nil)
    }
}
