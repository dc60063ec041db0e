import DiscordProtocol
import DiscordResponder
import Foundation
import Testing

/// Which texts ask the bot to talk (pure, no Redis).
@Suite("Triggers and reply text") struct TriggerTests {
    let bot = "900000000000000001"

    @Test("the prefix, any case, with debug and help")
    func prefix() {
        #expect(Trigger.detect(content: "!mark", botUserID: self.bot, prefix: "!mark")?.request == .sentence(seed: [], debug: false))
        #expect(Trigger.detect(content: "!MARK the cat", botUserID: self.bot, prefix: "!mark")?.request == .sentence(seed: ["the", "cat"], debug: false))
        #expect(Trigger.detect(content: "!mark debug the", botUserID: self.bot, prefix: "!mark")?.request == .sentence(seed: ["the"], debug: true))
        #expect(Trigger.detect(content: "!mark help", botUserID: self.bot, prefix: "!mark")?.request == .help)
        #expect(Trigger.detect(content: "!markov", botUserID: self.bot, prefix: "!mark") == nil)
        #expect(Trigger.detect(content: "say !mark", botUserID: self.bot, prefix: "!mark") == nil)
        #expect(Trigger.detect(content: "?m hi", botUserID: self.bot, prefix: "?m")?.kind == .prefix)
    }

    @Test("mentions in both forms seed the sentence with the rest; other mentions do not trigger")
    func mentions() {
        let plain = Trigger.detect(content: "<@\(self.bot)> the cat", botUserID: self.bot, prefix: "!mark")
        #expect(plain?.kind == .mention)
        #expect(plain?.request == .sentence(seed: ["the", "cat"], debug: false))
        #expect(Trigger.detect(content: "<@!\(self.bot)>   the\ncat", botUserID: self.bot, prefix: "!mark")?.request == .sentence(seed: ["the", "cat"], debug: false))
        #expect(Trigger.detect(content: "<@123> hi", botUserID: self.bot, prefix: "!mark") == nil)
        #expect(Trigger.detect(content: "<@\(self.bot)> hi", botUserID: nil, prefix: "!mark") == nil, "no bot id known yet")
        #expect(Trigger.detect(content: "", botUserID: self.bot, prefix: "!mark") == nil)
        #expect(Trigger.detect(content: "{\u{0}} \u{202E}", botUserID: self.bot, prefix: "!mark") == nil)
    }

    func interaction(_ name: String, options: String) throws -> Interaction {
        let json = #"{"id":"1","application_id":"2","type":2,"token":"t","guild_id":"3","channel_id":"4","data":{"name":"\#(name)","options":\#(options)}}"#
        return try JSONDecoder().decode(Interaction.self, from: Data(json.utf8))
    }

    @Test("slash commands and their options, subcommands included")
    func slash() throws {
        let mark = Trigger.slash(try self.interaction("mark", options: #"[{"name":"seed","type":3,"value":"the cat"},{"name":"debug","type":5,"value":true},{"name":"tts","type":5,"value":true}]"#))
        #expect(mark?.request == .sentence(seed: ["the", "cat"], debug: true))
        #expect(mark?.tts == true)
        let listen = Trigger.slash(try self.interaction("listen", options: #"[{"name":"add","type":1,"options":[{"name":"channel","type":7,"value":"99"}]}]"#))
        #expect(listen?.request == .command(.listen(.add, channel: "99")))
        let here = Trigger.slash(try self.interaction("autorespond", options: #"[{"name":"remove","type":1}]"#))
        #expect(here?.request == .command(.autorespond(.remove, channel: "4")), "defaults to the channel it was used in")
        let chance = Trigger.slash(try self.interaction("chance", options: #"[{"name":"set","type":1,"options":[{"name":"percent","type":10,"value":0.25}]}]"#))
        #expect(chance?.request == .command(.chance(percent: 0.25, channel: nil)))
        #expect(Trigger.slash(try self.interaction("train", options: "[]"))?.request == .command(.train))
        #expect(Trigger.SlashCommand.train.needsAdmin)
        #expect(Trigger.slash(try self.interaction("dance", options: "[]"))?.request == .unsupported("dance"))
        #expect(Trigger.Request.command(.forgetMe) == Trigger.slash(try self.interaction("forget-me", options: "[]"))?.request)
        #expect(!Trigger.SlashCommand.forgetMe.needsAdmin)
        #expect(Trigger.SlashCommand.deleteData.needsAdmin)
        #expect(!Trigger.SlashCommand.listen(.list, channel: nil).needsAdmin)
    }

    @Test("replies are cut to 2000 UTF-16 units on a character boundary, code blocks kept closed")
    func limit() {
        #expect(ReplyComposer.limit("short") == "short")
        let emoji = String(repeating: "😀", count: 1500)  // 3000 UTF-16 units
        let cut = ReplyComposer.limit(emoji)
        #expect(cut.utf16.count <= 2000)
        #expect(cut.hasSuffix("…"))
        #expect(cut.dropLast().allSatisfy { $0 == "😀" })
        let debug = ReplyComposer.limit("x\n```\n" + String(repeating: "step 1/2\n", count: 400) + "```")
        #expect(debug.utf16.count <= 2000)
        #expect(debug.hasSuffix("```"))
    }

    @Test("the chance roll wins about the share asked for; 0 never, 100 % always")
    func chanceRoll() {
        let ids = (0..<10_000).map { String(1_300_000_000_000_000_000 + $0) }
        let wins = ids.filter { ResponseSettings.wins(messageID: $0, partsPerMillion: 100_000) }.count
        #expect((800...1200).contains(wins), "\(wins) of 10,000 at 10 %")
        #expect(!ids.contains { ResponseSettings.wins(messageID: $0, partsPerMillion: 0) })
        #expect(ids.allSatisfy { ResponseSettings.wins(messageID: $0, partsPerMillion: 1_000_000) })
    }
}
