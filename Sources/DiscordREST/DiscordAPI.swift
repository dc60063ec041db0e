import DiscordProtocol
import Foundation

/// The body of `POST /channels/{id}/messages`: a reply that never pings anyone.
public struct CreateMessage: Sendable, Encodable, Hashable {
    public var content: String
    public var tts: Bool?
    public var allowedMentions = AllowedMentions()
    public var messageReference: MessageReference?
    /// At most 25 characters; with `enforceNonce`, Discord returns the earlier message instead of posting twice.
    public var nonce: String?
    public var enforceNonce: Bool?
    /// An image shown under the text (a reply with an image the guild posted).
    public var embeds: [Embed]?

    public struct Embed: Sendable, Encodable, Hashable {
        public struct Image: Sendable, Encodable, Hashable { public var url: String }
        public var image: Image
        public init(imageURL: String) { self.image = Image(url: imageURL) }
    }

    public struct AllowedMentions: Sendable, Encodable, Hashable {
        public var parse: [String] = []
        public init() {}
    }

    public struct MessageReference: Sendable, Encodable, Hashable {
        public var messageID: String
        public var failIfNotExists = false
        private enum CodingKeys: String, CodingKey { case messageID = "message_id", failIfNotExists = "fail_if_not_exists" }
        public init(messageID: String) { self.messageID = messageID }
    }

    public init(content: String, replyTo: String? = nil, nonce: String? = nil, tts: Bool = false) {
        self.content = content
        self.messageReference = replyTo.map(MessageReference.init(messageID:))
        self.nonce = nonce
        self.enforceNonce = nonce == nil ? nil : true
        self.tts = tts ? true : nil
    }

    private enum CodingKeys: String, CodingKey {
        case content, tts, allowedMentions = "allowed_mentions", messageReference = "message_reference", nonce,
            enforceNonce = "enforce_nonce", embeds
    }
}

/// The body of a message edit: new content, still pinging nobody, perhaps with files.
struct MessageEdit: Encodable {
    var content: String
    var allowedMentions = CreateMessage.AllowedMentions()
    var attachments: [InteractionCallback.Attachment]?
    enum CodingKeys: String, CodingKey { case content, allowedMentions = "allowed_mentions", attachments }
}

/// The body of an interaction callback: `{"type":4,"data":{…}}` or `{"type":5}`.
public struct InteractionCallback: Sendable, Encodable, Hashable {
    public var type: Int
    public var data: Data?

    public struct Data: Sendable, Encodable, Hashable {
        public var content: String
        public var tts: Bool?
        public var allowedMentions = CreateMessage.AllowedMentions()
        /// 64: only the invoking user sees it.
        public var flags: Int?
        public var embeds: [CreateMessage.Embed]?
        /// The files sent with the callback (`files[id]` parts of a multipart body).
        public var attachments: [Attachment]?
        private enum CodingKeys: String, CodingKey { case content, tts, allowedMentions = "allowed_mentions", flags, embeds, attachments }
    }

    /// A file of a message: its part `files[id]` and its name.
    public struct Attachment: Sendable, Encodable, Hashable {
        public var id: Int
        public var filename: String
        public init(id: Int, filename: String) {
            self.id = id
            self.filename = filename
        }
    }

    /// An immediate reply.
    public static func reply(_ content: String, tts: Bool = false, ephemeral: Bool = false) -> InteractionCallback {
        InteractionCallback(type: 4, data: Data(content: content, tts: tts ? true : nil, flags: ephemeral ? 64 : nil))
    }

    /// "Thinking…": the reply comes later as an edit of `@original`.
    public static let deferred = InteractionCallback(type: 5, data: nil)
    /// "Thinking…" seen only by the invoking user, as the reply that follows.
    public static let deferredEphemeral = InteractionCallback(type: 5, data: Data(content: "", flags: 64))
}

extension DiscordRESTClient {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }()

    static func json(_ value: some Encodable) -> [UInt8] { Array((try? Self.encoder.encode(value)) ?? Foundation.Data("{}".utf8)) }

    /// `POST /channels/{channel}/messages`; returns the message id.
    @discardableResult
    public func createMessage(channel: String, _ message: CreateMessage) async throws(DiscordRESTError) -> String {
        let response = try await self.send("POST", "/channels/\(channel)/messages", json: Self.json(message))
        let object = (try? JSONSerialization.jsonObject(with: Foundation.Data(response.body))) as? [String: Any]
        return object?["id"] as? String ?? ""
    }

    /// `POST /interactions/{id}/{token}/callback`.
    public func interactionCallback(id: String, token: String, _ callback: InteractionCallback) async throws(DiscordRESTError) {
        try await self.send("POST", "/interactions/\(id)/\(token)/callback", json: Self.json(callback))
    }

    /// `PATCH /webhooks/{application}/{token}/messages/@original`: the reply to a deferred interaction, perhaps with
    /// files.
    public func editOriginal(application: String, token: String, content: String, files: [FormData.File] = []) async throws(DiscordRESTError) {
        let path = "/webhooks/\(application)/\(token)/messages/@original"
        guard !files.isEmpty else {
            try await self.send("PATCH", path, json: Self.json(MessageEdit(content: content)))
            return
        }
        let edit = MessageEdit(content: content, attachments: files.enumerated().map { .init(id: $0.offset, filename: $0.element.filename) })
        try await self.send("PATCH", path, form: FormData(payload: Self.json(edit), files: files))
    }

    /// `PATCH /channels/{channel}/messages/{id}`: edits one of the bot's own messages (no pings).
    public func editMessage(channel: String, id: String, content: String) async throws(DiscordRESTError) {
        try await self.send("PATCH", "/channels/\(channel)/messages/\(id)", json: Self.json(MessageEdit(content: content)))
    }

    /// `GET /channels/{channel}/messages?limit=…[&before=…]`: a page of history, newest first.
    public func messages(channel: String, before: String?, limit: Int = 100) async throws(DiscordRESTError) -> [Message] {
        var path = "/channels/\(channel)/messages?limit=\(max(1, min(100, limit)))"
        if let before { path += "&before=\(before)" }
        return try await self.decode([Message].self, self.send("GET", path), method: "GET", path: path)
    }

    /// `GET /guilds/{guild}/threads/active`: the guild's active threads, of every channel.
    public func activeThreads(guild: String) async throws(DiscordRESTError) -> [DiscordChannel] {
        let path = "/guilds/\(guild)/threads/active"
        return try await self.decode(ThreadList.self, self.send("GET", path), method: "GET", path: path).threads
    }

    /// `GET /channels/{channel}/threads/archived/public?limit=100[&before=…]`: a page of archived public threads,
    /// most recently archived first; page on with the last thread's `archive_timestamp`.
    public func archivedPublicThreads(channel: String, before: String?) async throws(DiscordRESTError) -> ThreadList {
        var path = "/channels/\(channel)/threads/archived/public?limit=100"
        if let before, let escaped = before.addingPercentEncoding(withAllowedCharacters: .alphanumerics) {
            path += "&before=\(escaped)"
        }
        return try await self.decode(ThreadList.self, self.send("GET", path), method: "GET", path: path)
    }

    /// `POST /attachments/refresh-urls`: fresh signed CDN links for stored attachment URLs, in the same order
    /// (a URL Discord does not refresh is left out).
    public func refreshAttachmentURLs(_ urls: [String]) async throws(DiscordRESTError) -> [String: String] {
        struct Body: Encodable {
            var attachmentURLs: [String]
            enum CodingKeys: String, CodingKey { case attachmentURLs = "attachment_urls" }
        }
        struct Answer: Decodable {
            struct Pair: Decodable {
                var original: String
                var refreshed: String
            }
            var refreshedURLs: [Pair]
            enum CodingKeys: String, CodingKey { case refreshedURLs = "refreshed_urls" }
        }
        let path = "/attachments/refresh-urls"
        let answer = try await self.decode(Answer.self, self.send("POST", path, json: Self.json(Body(attachmentURLs: urls))), method: "POST", path: path)
        return Dictionary(answer.refreshedURLs.map { ($0.original, $0.refreshed) }, uniquingKeysWith: { first, _ in first })
    }

    /// Decodes a 2xx answer's body; a body that does not decode is an error naming the route.
    func decode<Value: Decodable>(_ type: Value.Type, _ response: HTTPResponse, method: String, path: String) throws(DiscordRESTError) -> Value {
        do {
            return try JSONDecoder().decode(type, from: Foundation.Data(response.body))
        } catch {
            throw DiscordRESTError(status: response.status, code: nil, message: "unexpected answer: \(error)", method: method, path: path)
        }
    }

    /// `PUT /applications/{application}/commands` (or the guild's): replaces the whole command list.
    public func putCommands(application: String, guild: String?, json: [UInt8]) async throws(DiscordRESTError) {
        let path = guild.map { "/applications/\(application)/guilds/\($0)/commands" } ?? "/applications/\(application)/commands"
        try await self.send("PUT", path, json: json)
    }
}
