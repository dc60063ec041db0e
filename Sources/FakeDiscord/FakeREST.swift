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
    }

    /// A request as received.
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var body: [UInt8]
        public var status: Int
        public var at: ContinuousClock.Instant
        /// The body parsed as a JSON object, when it is one.
        public var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(self.body))) as? [String: Any]
        }
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

    /// Ban mode: every request gets a 429 without rate-limit headers, as Discord's temporary IP ban.
    public func setBanned(_ banned: Bool) { self.state.withLockedValue { $0.banned = banned } }

    public func configure(_ change: (inout Configuration) -> Void) { self.state.withLockedValue { change(&$0.configuration) } }

    /// Notes that an interaction was created now (its callback deadline starts).
    func interactionCreated(_ id: String) { self.state.withLockedValue { $0.interactions[id] = .now } }

    // MARK: - Routes

    func handle(method: String, path: String, authorization: String?, body: [UInt8]) -> Answer {
        let answer = self.route(method: method, path: path, authorization: authorization, body: body)
        self.state.withLockedValue {
            $0.requests.append(Request(method: method, path: path, body: body, status: answer.status, at: .now))
        }
        return answer
    }

    private func route(method: String, path: String, authorization: String?, body: [UInt8]) -> Answer {
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
            case ("PUT", _, "applications") where route.last == "commands":
                return Answer(status: 200, body: String(decoding: body, as: UTF8.self))
            default:
                return Self.notFound
            }
        }
    }

    private static let notFound = Answer(status: 404, body: #"{"message":"404: Not Found","code":0}"#)

    private static func createMessage(channel: String, body: [UInt8], now: ContinuousClock.Instant, state: inout State) -> Answer {
        let limit = state.configuration.messageBucketLimit
        let window = state.configuration.messageBucketWindow
        var bucket = state.buckets[channel] ?? Window(start: now, count: 0)
        if now - bucket.start >= window { bucket = Window(start: now, count: 0) }
        bucket.count += 1
        state.buckets[channel] = bucket
        let resetAfter = Self.seconds(window - (now - bucket.start))
        var headers = [
            ("X-RateLimit-Limit", "\(limit)"), ("X-RateLimit-Remaining", "\(max(0, limit - bucket.count))"),
            ("X-RateLimit-Reset-After", "\(resetAfter)"), ("X-RateLimit-Bucket", "fake-channel-messages"),
            ("X-RateLimit-Reset", String(format: "%.3f", Date().timeIntervalSince1970 + resetAfter)),
        ]
        if bucket.count > limit {
            headers[1] = ("X-RateLimit-Remaining", "0")
            headers.append(("X-RateLimit-Scope", "user"))
            headers.append(("Retry-After", "\(resetAfter)"))
            return Answer(status: 429, body: #"{"message":"You are being rate limited.","retry_after":\#(resetAfter),"global":false}"#,
                          headers: headers)
        }
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
            nonce: nonce, tts: object["tts"] as? Bool ?? false
        ))
        if let nonce { state.nonces[channel + "/" + nonce] = id }
        return Answer(status: 200, body: #"{"id":"\#(id)","channel_id":"\#(channel)"}"#, headers: headers)
    }

    private static func seconds(_ duration: Duration) -> Double {
        max(0.001, Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }
}
