import DiscordProtocol
import Foundation
import NIOConcurrencyHelpers

/// The REST side of the fake Discord: the routes the bot uses, with Discord's rate-limit headers, bucket and
/// global 429s, `enforce_nonce` deduplication, the interaction deadline, a ban mode, and a record of every request.
public final class FakeREST: Sendable {
    /// Rate-limit and deadline settings.
    public struct Configuration: Sendable {
        /// Messages per channel per window (`POST /channels/{id}/messages`).
        public var messageBucketLimit = 5
        public var messageBucketWindow: Duration = .seconds(1)
        /// Requests per second per token (interaction callbacks exempt).
        public var globalLimit = 50
        /// Interaction callbacks later than this after the interaction get 404 with code 10062.
        public var interactionDeadline: Duration = .seconds(3)
        /// History reads per channel per window (`GET /channels/{id}/messages`).
        public var historyBucketLimit = 50
        public var historyBucketWindow: Duration = .seconds(1)
        public init() {}
    }

    /// A message the bot posted.
    public struct Message: Sendable, Hashable {
        public var id: String
        public var channel: String
        public var content: String
        public var replyTo: String?
        public var failIfNotExists: Bool?
        public var allowedMentionsParse: [String]?
        public var nonce: String?
        public var tts: Bool
        /// The URLs of the embeds' images.
        public var images: [String] = []
    }

    /// A message of a channel's history, served by `GET /channels/{id}/messages`.
    public struct HistoryMessage: Sendable, Hashable {
        public var id: UInt64
        public var author: UInt64
        public var content: String
        public var bot: Bool
        public var type: Int
        public var attachments: [String]
        public init(id: UInt64, author: UInt64, content: String, bot: Bool = false, type: Int = 0, attachments: [String] = []) {
            self.id = id
            self.author = author
            self.content = content
            self.bot = bot
            self.type = type
            self.attachments = attachments
        }
    }

    /// A thread of a channel: active, or archived at `archivedAt` (seconds since the Unix epoch).
    struct Thread {
        var id: UInt64
        var parent: UInt64
        var guild: UInt64
        var archivedAt: Double?
    }

    /// A request as received.
    public struct Request: Sendable {
        public var method: String
        public var path: String
        /// The query string, without `?` (`""` when none).
        public var query: String
        public var body: [UInt8]
        public var status: Int
        public var at: ContinuousClock.Instant
        /// The `Content-Type` header.
        public var contentType: String?
        /// The body parsed as a JSON object, when it is one (for a multipart body: its `payload_json`).
        public var json: [String: Any]? {
            let json = self.files.first { $0.name == "payload_json" }?.bytes ?? self.body
            return (try? JSONSerialization.jsonObject(with: Data(json))) as? [String: Any]
        }
        /// The parts of a `multipart/form-data` body (`payload_json`, `files[n]`); empty for other bodies.
        public var files: [FormPart] { self.contentType.flatMap { FormPart.parse(self.body, contentType: $0) } ?? [] }
    }

    /// One part of a `multipart/form-data` body.
    public struct FormPart: Sendable {
        public var name: String
        public var filename: String?
        public var bytes: [UInt8]

        /// The parts, or `nil` when the body is not well-formed multipart for that content type.
        static func parse(_ body: [UInt8], contentType: String) -> [FormPart]? {
            guard contentType.lowercased().hasPrefix("multipart/form-data"),
                  let boundary = contentType.split(separator: ";").lazy.map({ $0.trimmingCharacters(in: .whitespaces) })
                      .first(where: { $0.hasPrefix("boundary=") })?.dropFirst(9).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            else { return nil }
            let delimiter = Array("--\(boundary)".utf8)
            var parts: [FormPart] = []
            var sections: [ArraySlice<UInt8>] = []
            var start = 0
            var index = 0
            while index + delimiter.count <= body.count {
                if body[index] == delimiter[0], Array(body[index..<(index + delimiter.count)]) == delimiter {
                    sections.append(body[start..<index])
                    index += delimiter.count
                    start = index
                } else {
                    index += 1
                }
            }
            guard sections.count >= 2, body[start...].starts(with: Array("--".utf8)) else { return nil }
            for section in sections.dropFirst() {
                // CRLF, headers, a blank line, the content, CRLF.
                let text = Array(section)
                guard let blank = (0..<max(0, text.count - 3)).first(where: { text[$0] == 13 && text[$0 + 1] == 10 && text[$0 + 2] == 13 && text[$0 + 3] == 10 }) else { return nil }
                let headers = String(decoding: text[..<blank], as: UTF8.self)
                var content = Array(text[(blank + 4)...])
                if content.suffix(2) == [13, 10] { content.removeLast(2) }
                guard let disposition = headers.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-disposition: form-data") }) else { return nil }
                func attribute(_ name: String) -> String? {
                    guard let range = disposition.range(of: "\(name)=\"") else { return nil }
                    return disposition[range.upperBound...].split(separator: "\"", maxSplits: 1).first.map(String.init)
                }
                guard let name = attribute("name") else { return nil }
                parts.append(FormPart(name: name, filename: attribute("filename"), bytes: content))
            }
            return parts
        }
    }

    /// Checks a message body with attachments as Discord does: `payload_json` is a JSON object, and every
    /// attachment it lists (`attachments[].id`) has its `files[id]` part; `nil` when it holds.
    static func attachmentError(_ body: [UInt8], contentType: String?) -> Answer? {
        guard let contentType, contentType.lowercased().hasPrefix("multipart/") else { return nil }
        let invalid = Answer(status: 400, body: #"{"message":"Invalid Form Body","code":50035}"#)
        guard let parts = FormPart.parse(body, contentType: contentType),
              let json = parts.first(where: { $0.name == "payload_json" }),
              let object = (try? JSONSerialization.jsonObject(with: Data(json.bytes))) as? [String: Any]
        else { return invalid }
        for attachment in object["attachments"] as? [[String: Any]] ?? [] {
            let id = (attachment["id"] as? Int).map(String.init) ?? attachment["id"] as? String ?? ""
            guard parts.contains(where: { $0.name == "files[\(id)]" && $0.filename != nil }) else { return invalid }
        }
        return nil
    }

    struct Answer {
        var status: Int
        var body: String
        var headers: [(String, String)] = []
    }

    private struct Window {
        var start: ContinuousClock.Instant
        var count: Int
    }

    private struct State {
        var configuration: Configuration
        var messages: [Message] = []
        var requests: [Request] = []
        var nonces: [String: String] = [:]
        var buckets: [String: Window] = [:]
        var global: Window?
        var interactions: [String: ContinuousClock.Instant] = [:]
        var acknowledged: Set<String> = []
        var nextID: UInt64 = 1_500_000_000_000_000_000
        var banned = false
        /// Per channel, oldest first.
        var history: [UInt64: [HistoryMessage]] = [:]
        var threads: [Thread] = []
        var forbidden: Set<UInt64> = []
        /// Edits of the bot's messages, in order: (message id, new content).
        var edits: [(String, String)] = []
    }

    private let state: NIOLockedValueBox<State>
    private let token: String

    init(token: String, configuration: Configuration) {
        self.token = token
        self.state = NIOLockedValueBox(State(configuration: configuration))
    }

    // MARK: - For tests

    public var messages: [Message] { self.state.withLockedValue { $0.messages } }
    /// How many messages were posted (cheap to poll, unlike ``messages``).
    public var messageCount: Int { self.state.withLockedValue { $0.messages.count } }
    public var requests: [Request] { self.state.withLockedValue { $0.requests } }
    /// 429 answers served.
    public var rateLimitedCount: Int { self.state.withLockedValue { $0.requests.filter { $0.status == 429 }.count } }

    /// Adds messages to a channel's (or thread's) history.
    public func addHistory(channel: UInt64, _ messages: [HistoryMessage]) {
        self.state.withLockedValue { state in
            state.history[channel, default: []].append(contentsOf: messages)
            state.history[channel]!.sort { $0.id < $1.id }
        }
    }

    /// Adds a thread of `parent`: active, or archived (listed by the archived-threads route, newest archive first).
    public func addThread(_ id: UInt64, parent: UInt64, guild: UInt64, archived: Bool) {
        self.state.withLockedValue { state in
            let archivedAt = archived ? 1_700_000_000 + Double(state.threads.count) : nil
            state.threads.append(Thread(id: id, parent: parent, guild: guild, archivedAt: archivedAt))
        }
    }

    /// Reading this channel's history gets 403 Missing Access (50001).
    public func forbid(channel: UInt64) { self.state.withLockedValue { _ = $0.forbidden.insert(channel) } }

    /// Edits of the bot's messages (`PATCH /channels/{id}/messages/{id}`), in order.
    public var edits: [(message: String, content: String)] { self.state.withLockedValue { $0.edits.map { ($0.0, $0.1) } } }

    /// Ban mode: every request gets a 429 without rate-limit headers, as Discord's temporary IP ban.
    public func setBanned(_ banned: Bool) { self.state.withLockedValue { $0.banned = banned } }

    public func configure(_ change: (inout Configuration) -> Void) { self.state.withLockedValue { change(&$0.configuration) } }

    /// Notes that an interaction was created now (its callback deadline starts).
    func interactionCreated(_ id: String) { self.state.withLockedValue { $0.interactions[id] = .now } }

    // MARK: - Routes

    func handle(method: String, path: String, query: String, authorization: String?, contentType: String?, body: [UInt8]) -> Answer {
        let answer = Self.attachmentError(body, contentType: contentType)
            ?? self.route(method: method, path: path, query: Self.parameters(query), authorization: authorization, body: body)
        self.state.withLockedValue {
            $0.requests.append(Request(method: method, path: path, query: query, body: body, status: answer.status, at: .now, contentType: contentType))
        }
        return answer
    }

    static func parameters(_ query: String) -> [String: String] {
        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            parameters[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return parameters
    }

    private func route(method: String, path: String, query: [String: String], authorization: String?, body: [UInt8]) -> Answer {
        guard authorization == "Bot \(self.token)" else {
            return Answer(status: 401, body: #"{"message":"401: Unauthorized","code":0}"#)
        }
        let parts = path.split(separator: "/").map(String.init)
        guard parts.count >= 2, parts[0] == "api", parts[1] == "v10" else { return Self.notFound }
        let route = Array(parts.dropFirst(2))
        let now = ContinuousClock.now
        return self.state.withLockedValue { state -> Answer in
            if state.banned {
                return Answer(status: 429, body: #"{"message":"You are being blocked from accessing our API temporarily due to exceeding our rate limits frequently.","code":0}"#)
            }
            let exempt = route.first == "interactions"
            if !exempt {
                var global = state.global ?? Window(start: now, count: 0)
                if now - global.start >= .seconds(1) { global = Window(start: now, count: 0) }
                global.count += 1
                state.global = global
                if global.count > state.configuration.globalLimit {
                    let retry = Self.seconds(.seconds(1) - (now - global.start))
                    return Answer(
                        status: 429, body: #"{"message":"You are being rate limited.","retry_after":\#(retry),"global":true}"#,
                        headers: [("X-RateLimit-Global", "true"), ("X-RateLimit-Scope", "global"), ("Retry-After", "\(retry)")]
                    )
                }
            }
            switch (method, route.count, route.first) {
            case ("POST", 3, "channels") where route[2] == "messages":
                return Self.createMessage(channel: route[1], body: body, now: now, state: &state)
            case ("POST", 4, "interactions") where route[3] == "callback":
                guard let created = state.interactions[route[1]], now - created <= state.configuration.interactionDeadline else {
                    return Answer(status: 404, body: #"{"message":"Unknown interaction","code":10062}"#)
                }
                guard state.acknowledged.insert(route[1]).inserted else {
                    return Answer(status: 400, body: #"{"message":"Interaction has already been acknowledged.","code":40060}"#)
                }
                return Answer(status: 204, body: "")
            case ("PATCH", 5, "webhooks") where route[3] == "messages" && route[4] == "@original":
                return Answer(status: 200, body: #"{"id":"\#(state.nextID)","channel_id":"0"}"#)
            case ("POST", 3, "webhooks"):
                state.nextID += 1
                return Answer(status: 200, body: #"{"id":"\#(state.nextID)","channel_id":"0"}"#)
            case ("GET", 3, "channels") where route[2] == "messages":
                return Self.history(channel: route[1], query: query, now: now, state: &state)
            case ("PATCH", 4, "channels") where route[2] == "messages":
                guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
                      let content = object["content"] as? String, !content.isEmpty, content.utf16.count <= 2000
                else { return Answer(status: 400, body: #"{"message":"Invalid Form Body","code":50035}"#) }
                guard let index = state.messages.firstIndex(where: { $0.id == route[3] && $0.channel == route[1] }) else {
                    return Answer(status: 404, body: #"{"message":"Unknown Message","code":10008}"#)
                }
                state.messages[index].content = content
                state.edits.append((route[3], content))
                return Answer(status: 200, body: #"{"id":"\#(route[3])","channel_id":"\#(route[1])"}"#)
            case ("GET", 4, "guilds") where route[2] == "threads" && route[3] == "active":
                let threads = state.threads.filter { String($0.guild) == route[1] && $0.archivedAt == nil }
                return Answer(status: 200, body: #"{"threads":[\#(threads.map(Self.threadJSON).joined(separator: ","))],"members":[]}"#)
            case ("GET", 5, "channels") where route[2] == "threads" && route[3] == "archived" && route[4] == "public":
                let before = query["before"].flatMap { ISO8601DateFormatter().date(from: $0)?.timeIntervalSince1970 } ?? .infinity
                let limit = max(2, min(100, Int(query["limit"] ?? "") ?? 50))
                let archived = state.threads
                    .filter { String($0.parent) == route[1] && ($0.archivedAt ?? .infinity) < before }
                    .sorted { $0.archivedAt! > $1.archivedAt! }
                let page = archived.prefix(limit)
                return Answer(status: 200, body: #"{"threads":[\#(page.map(Self.threadJSON).joined(separator: ","))],"members":[],"has_more":\#(archived.count > page.count)}"#)
            case ("POST", 2, "attachments") where route[1] == "refresh-urls":
                guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
                      let urls = object["attachment_urls"] as? [String]
                else { return Answer(status: 400, body: #"{"message":"Invalid Form Body","code":50035}"#) }
                let pairs = urls.map { url in
                    let base = url.split(separator: "?").first.map(String.init) ?? url
                    return #"{"original":\#(FakeDiscord.jsonString(url)),"refreshed":\#(FakeDiscord.jsonString(base + "?ex=refreshed"))}"#
                }
                return Answer(status: 200, body: #"{"refreshed_urls":[\#(pairs.joined(separator: ","))]}"#)
            case ("PUT", _, "applications") where route.last == "commands":
                return Answer(status: 200, body: String(decoding: body, as: UTF8.self))
            default:
                return Self.notFound
            }
        }
    }

    private static let notFound = Answer(status: 404, body: #"{"message":"404: Not Found","code":0}"#)

    private static func createMessage(channel: String, body: [UInt8], now: ContinuousClock.Instant, state: inout State) -> Answer {
        let (headers, limited) = Self.take(
            bucket: channel, id: "fake-channel-messages", limit: state.configuration.messageBucketLimit,
            window: state.configuration.messageBucketWindow, now: now, state: &state
        )
        if let limited { return limited }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            return Answer(status: 400, body: #"{"message":"Invalid Form Body","code":50035}"#, headers: headers)
        }
        let content = object["content"] as? String ?? ""
        guard !content.isEmpty else {
            return Answer(status: 400, body: #"{"message":"Cannot send an empty message","code":50006}"#, headers: headers)
        }
        guard content.utf16.count <= 2000 else {
            return Answer(status: 400, body: #"{"message":"Invalid Form Body","code":50035,"errors":{"content":{"_errors":[{"code":"BASE_TYPE_MAX_LENGTH","message":"Must be 2000 or fewer in length."}]}}}"#, headers: headers)
        }
        let nonce = object["nonce"] as? String
        if let nonce, object["enforce_nonce"] as? Bool == true, let existing = state.nonces[channel + "/" + nonce] {
            return Answer(status: 200, body: #"{"id":"\#(existing)","channel_id":"\#(channel)","nonce":"\#(nonce)"}"#, headers: headers)
        }
        state.nextID += 1
        let id = String(state.nextID)
        let reference = object["message_reference"] as? [String: Any]
        state.messages.append(Message(
            id: id, channel: channel, content: content, replyTo: reference?["message_id"] as? String,
            failIfNotExists: reference?["fail_if_not_exists"] as? Bool,
            allowedMentionsParse: (object["allowed_mentions"] as? [String: Any])?["parse"] as? [String],
            nonce: nonce, tts: object["tts"] as? Bool ?? false,
            images: (object["embeds"] as? [[String: Any]] ?? []).compactMap { ($0["image"] as? [String: Any])?["url"] as? String }
        ))
        if let nonce { state.nonces[channel + "/" + nonce] = id }
        return Answer(status: 200, body: #"{"id":"\#(id)","channel_id":"\#(channel)"}"#, headers: headers)
    }

    private static func threadJSON(_ thread: Thread) -> String {
        var metadata = #""archived":\#(thread.archivedAt != nil)"#
        if let at = thread.archivedAt {
            metadata += #","archive_timestamp":"\#(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: at)))""#
        }
        return #"{"id":"\#(thread.id)","type":11,"guild_id":"\#(thread.guild)","parent_id":"\#(thread.parent)","thread_metadata":{\#(metadata)}}"#
    }

    /// `GET /channels/{id}/messages`: newest first, before `before`, at most `limit` (1–100, default 50), behind a
    /// per-channel bucket.
    private static func history(channel: String, query: [String: String], now: ContinuousClock.Instant, state: inout State) -> Answer {
        let (headers, limited) = Self.take(
            bucket: "history:" + channel, id: "fake-channel-history", limit: state.configuration.historyBucketLimit,
            window: state.configuration.historyBucketWindow, now: now, state: &state
        )
        if let limited { return limited }
        guard let id = UInt64(channel), state.history[id] != nil || state.threads.contains(where: { $0.id == id }) else {
            return Answer(status: 404, body: #"{"message":"Unknown Channel","code":10003}"#, headers: headers)
        }
        guard !state.forbidden.contains(id) else {
            return Answer(status: 403, body: #"{"message":"Missing Access","code":50001}"#, headers: headers)
        }
        let limit = max(1, min(100, Int(query["limit"] ?? "") ?? 50))
        let before = query["before"].flatMap { UInt64($0) } ?? .max
        let messages = state.history[id] ?? []
        // Newest first: binary search for the first id at or past `before`, then walk back.
        var low = 0, high = messages.count
        while low < high {
            let middle = (low + high) / 2
            if messages[middle].id < before { low = middle + 1 } else { high = middle }
        }
        let page = messages[max(0, low - limit)..<low].reversed().map { message in
            let attachments = message.attachments.enumerated().map { index, url in
                #"{"id":"\#(message.id)\#(index)","filename":"f\#(index).png","size":1,"url":\#(FakeDiscord.jsonString(url)),"proxy_url":\#(FakeDiscord.jsonString(url))}"#
            }
            return #"{"id":"\#(message.id)","channel_id":"\#(channel)","author":{"id":"\#(message.author)","username":"u\#(message.author)"\#(message.bot ? #","bot":true"# : "")},"content":\#(FakeDiscord.jsonString(message.content)),"type":\#(message.type),"mentions":[],"attachments":[\#(attachments.joined(separator: ","))],"timestamp":"2024-01-01T00:00:00.000000+00:00"}"#
        }
        return Answer(status: 200, body: "[" + page.joined(separator: ",") + "]", headers: headers)
    }

    /// Takes a request from a bucket: its rate-limit headers, and a 429 when it is empty.
    private static func take(
        bucket key: String, id: String, limit: Int, window: Duration, now: ContinuousClock.Instant, state: inout State
    ) -> (headers: [(String, String)], limited: Answer?) {
        var bucket = state.buckets[key] ?? Window(start: now, count: 0)
        if now - bucket.start >= window { bucket = Window(start: now, count: 0) }
        bucket.count += 1
        state.buckets[key] = bucket
        let resetAfter = Self.seconds(window - (now - bucket.start))
        var headers = [
            ("X-RateLimit-Limit", "\(limit)"), ("X-RateLimit-Remaining", "\(max(0, limit - bucket.count))"),
            ("X-RateLimit-Reset-After", "\(resetAfter)"), ("X-RateLimit-Bucket", id),
            ("X-RateLimit-Reset", String(format: "%.3f", Date().timeIntervalSince1970 + resetAfter)),
        ]
        guard bucket.count > limit else { return (headers, nil) }
        headers.append(("X-RateLimit-Scope", "user"))
        headers.append(("Retry-After", "\(resetAfter)"))
        let answer = Answer(status: 429, body: #"{"message":"You are being rate limited.","retry_after":\#(resetAfter),"global":false}"#,
                            headers: headers)
        return (headers, answer)
    }

    private static func seconds(_ duration: Duration) -> Double {
        max(0.001, Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }
}
