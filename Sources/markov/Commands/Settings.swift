import ArgumentParser
import DiscordResponder
import MarkovChains
import MarkovCore
import Redis

/// `markov settings --guild G`: shows and changes a guild's settings.
struct Settings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show or change a guild's settings.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "The guild (Discord id).") var guild: String
    @Option(help: "Enable learning in a channel (repeatable).") var listen: [String] = []
    @Option(help: "Disable learning in a channel (repeatable).") var unlisten: [String] = []
    @Option(help: "Let an opted-out user's new messages be learnt again (repeatable).") var rememberUser: [String] = []
    @Option(help: "Answer every human message in a channel (repeatable).") var autorespond: [String] = []
    @Option(help: "Stop answering every message in a channel (repeatable).") var noAutorespond: [String] = []
    @Option(help: "Answer only in this channel and the others added (repeatable).") var replyChannel: [String] = []
    @Option(help: "Stop answering in a channel singled out with --reply-channel (repeatable).") var noReplyChannel: [String] = []
    @Option(help: "Let only members with this role (and the others added) ask (repeatable).") var askRole: [String] = []
    @Option(help: "Remove a role added with --ask-role (repeatable).") var noAskRole: [String] = []
    @Option(help: "The chance, in percent, that a reply carries an image the guild posted (0: never, the default).")
    var imageChance: Double?
    @Option(help: "The chance, in percent (fractions allowed), of answering a message unasked in the guild.")
    var chance: Double?
    @Option(help: "Strip this from messages before learning them: links, invites, emoji, mentions or code (repeatable; applies to new messages, `markov relearn` to the history).")
    var strip: [String] = []
    @Option(help: "Learn this in messages again: links, invites, emoji, mentions or code (repeatable).")
    var keep: [String] = []
    @Option(help: "Never say this word (repeatable; case-insensitive, whole tokens; `*x`, `x*`, `*x*`: ending in, starting with, containing x).")
    var block: [String] = []
    @Option(help: "Remove a word from the blocklist (repeatable).") var unblock: [String] = []
    @Option(help: "on: forget a member's messages when they leave the guild (needs the gateway's privileged GUILD_MEMBERS intent); off: keep them.")
    var purgeOnLeave: String?

    func validate() throws {
        if let purgeOnLeave, !["on", "off"].contains(purgeOnLeave) { throw ValidationError("--purge-on-leave is on or off") }
        for word in self.block + self.unblock {
            do {
                _ = try BlockEntry(word)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        for name in self.strip + self.keep where ContentFilters(name: name) == nil {
            throw ValidationError("'\(name)' is not a filter; filters: \(ContentFilters.named.map(\.name).joined(separator: ", "))")
        }
    }

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.settings")
        defer { context.redis.shutdown() }
        for channel in self.listen { try await context.store.setListening(true, channel: try snowflake(channel, "--listen"), guild: guild) }
        for channel in self.unlisten { try await context.store.setListening(false, channel: try snowflake(channel, "--unlisten"), guild: guild) }
        for user in self.rememberUser { try await context.store.rememberUser(try snowflake(user, "--remember-user"), guild: guild) }
        let responses = ResponseSettings(redis: context.redis)
        for channel in self.autorespond { try await responses.setAutorespond(true, guild: guild, channel: try snowflake(channel, "--autorespond")) }
        for channel in self.noAutorespond { try await responses.setAutorespond(false, guild: guild, channel: try snowflake(channel, "--no-autorespond")) }
        for channel in self.replyChannel { try await responses.setReplyChannel(true, guild: guild, channel: try snowflake(channel, "--reply-channel")) }
        for channel in self.noReplyChannel { try await responses.setReplyChannel(false, guild: guild, channel: try snowflake(channel, "--no-reply-channel")) }
        for role in self.askRole { try await responses.setAskRole(true, guild: guild, role: try snowflake(role, "--ask-role")) }
        for role in self.noAskRole { try await responses.setAskRole(false, guild: guild, role: try snowflake(role, "--no-ask-role")) }
        if let imageChance {
            guard (0...100).contains(imageChance) else { throw ValidationError("--image-chance is a percentage from 0 to 100") }
            try await responses.setImageChance(Int((imageChance * 10_000).rounded()), guild: guild)
        }
        if let chance {
            guard (0...100).contains(chance) else { throw ValidationError("--chance is a percentage from 0 to 100") }
            try await responses.setChance(Int((chance * 10_000).rounded()), guild: guild, channel: nil)
        }
        if !self.strip.isEmpty || !self.keep.isEmpty {
            var filters = try await context.store.filters(guild: guild)
            for name in self.strip { if let filter = ContentFilters(name: name) { filters.insert(filter) } }
            for name in self.keep { if let filter = ContentFilters(name: name) { filters.remove(filter) } }
            try await context.store.setFilters(filters, guild: guild)
        }
        do {
            try await context.store.setBlocked(try self.block.map { try BlockEntry($0) }, blocked: true, guild: guild)
            try await context.store.setBlocked(try self.unblock.map { try BlockEntry($0) }, blocked: false, guild: guild)
        } catch let error as BlockEntry.InvalidEntry {
            throw ValidationError(error.description)
        }
        if let purgeOnLeave { try await context.store.setPurgeOnLeave(purgeOnLeave == "on", guild: guild) }
        print("guild \(guild)")
        print("  learning in channels: \(try await context.store.listenChannels(guild: guild).joined(separator: ", "))")
        let filtersOn = await context.flags.isOn(.trainingFilters, guild: guild)
        print("  stripped before learning: \(try await context.store.filters(guild: guild))"
              + (filtersOn ? "" : " (not applied: the training-filters flag is off for this guild)"))
        let blocked = try await context.store.blocklist(guild: guild)
        print("  never said: \(blocked.isEmpty ? "(no blocklist)" : blocked.joined(separator: ", "))")
        print("  members who leave: \(try await context.store.purgesOnLeave(guild: guild) ? "their messages are forgotten" : "their messages are kept")")
        print("  opted-out users: \(try await context.store.optedOutUsers(guild: guild).joined(separator: ", "))")
        print("  auto-respond channels: \(try await responses.autorespondChannels(guild: guild).joined(separator: ", "))")
        let replyChannels = try await responses.replyChannels(guild: guild)
        print("  answers in channels: \(replyChannels.isEmpty ? "all" : replyChannels.joined(separator: ", "))")
        let askRoles = try await responses.askRoles(guild: guild)
        print("  roles that may ask: \(askRoles.isEmpty ? "everyone" : askRoles.joined(separator: ", "))")
        var chances = try await responses.chances(guild: guild)
        let images = chances.removeValue(forKey: "images") ?? 0
        print("  replies with an image: \(Double(images) / 10_000)%")
        let sortedChances = chances.sorted { $0.key < $1.key }
        print("  chance to answer unasked: " + sortedChances.map { "\($0.key == "guild" ? "guild" : "channel \($0.key)") \(Double($0.value) / 10_000)%" }.joined(separator: ", "))
        if !self.strip.isEmpty || !self.keep.isEmpty {
            print("the filters apply to messages learnt from now on; `markov relearn --guild \(guild)` applies them to the history")
        }
    }
}
