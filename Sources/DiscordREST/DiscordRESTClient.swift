import DiscordProtocol
import Foundation
import Logging
import CoreMetrics
import Redis
import Synchronization

/// A failed Discord REST call, with Discord's own code and message when it sent them. The token never appears.
public struct DiscordRESTError: Error, Sendable, CustomStringConvertible {
    /// The HTTP status, or `nil` when no response came.
    public var status: Int?
    /// Discord's JSON error code (50035, 10008, …), when the body had one.
    public var code: Int?
    public var message: String
    public var method: String
    public var path: String

    public var description: String {
        var text = "\(self.method) \(self.path) failed"
        if let status { text += " with HTTP \(status)" }
        if let code { text += ", Discord code \(code)" }
        return text + ": \(self.message)"
    }
}

/// Discord's REST API: base URL, bot token, user agent, JSON bodies, retries with backoff on network errors
/// and 5xx answers, and Discord's error bodies turned into ``DiscordRESTError``.
public struct DiscordRESTClient: Sendable {
    public let apiURL: String
    private let token: String
    private let http: CurlHTTPClient
    private let logger: Logger
    /// Tries per request for network errors and 5xx answers.
    public var attempts = 3
    /// Rate limits shared through Redis; `nil` sends without them (discovery, one-off commands).
    public var rateLimits: SharedRateLimits?
    /// 429 answers retried per request before giving up.
    public var rateLimitRetries = 5
    /// Counts of answers by status, 429s and time waited on buckets.
    public let counters = RESTCounters()

    public static let userAgent = "DiscordBot (https://github.com/markov-bot/markov, 0.1)"

    public init(apiURL: String, token: String, http: CurlHTTPClient = CurlHTTPClient(), logger: Logger) {
        self.apiURL = apiURL.hasSuffix("/") ? String(apiURL.dropLast()) : apiURL
        self.token = token
        self.http = http
        self.logger = logger
    }

    /// Sends a request; 2xx answers come back, everything else throws. With ``rateLimits`` the request waits for
    /// its bucket and the global limit, and 429s are honoured and retried.
    @discardableResult
    public func send(_ method: String, _ path: String, json body: [UInt8]? = nil) async throws(DiscordRESTError) -> HTTPResponse {
        try await self.send(method, path, body: body, contentType: "application/json")
    }

    /// Sends a message body with files (`payload_json` and `files[n]`), as `multipart/form-data`.
    @discardableResult
    public func send(_ method: String, _ path: String, form: FormData) async throws(DiscordRESTError) -> HTTPResponse {
        try await self.send(method, path, body: form.body, contentType: form.contentType)
    }

    private func send(_ method: String, _ path: String, body: [UInt8]?, contentType: String) async throws(DiscordRESTError) -> HTTPResponse {
        var headers = [("Authorization", "Bot \(self.token)"), ("User-Agent", Self.userAgent)]
        if body != nil { headers.append(("Content-Type", contentType)) }
        let request = HTTPRequest(method: method, url: self.apiURL + path, headers: headers, body: body)
        let route = RESTRoute(method: method, path: path)
        var attempt = 0
        var limited = 0
        while true {
            try await self.waitForSlot(route, method: method, path: path)
            attempt += 1
            let response: HTTPResponse
            do {
                response = try await self.http.perform(request)
            } catch {
                let failure = DiscordRESTError(status: nil, code: nil, message: "\(error)", method: method, path: path)
                guard attempt < self.attempts else { throw failure }
                self.logger.warning("Discord request failed, retrying", metadata: ["error": "\(failure)"])
                try await Self.pause(Self.backoff(attempt), method: method, path: path)
                continue
            }
            self.counters.count(status: response.status)
            var retryAfter: Double?
            var global = false
            if response.status == 429 {
                let limit = try? JSONDecoder().decode(RateLimitBody.self, from: Data(response.body))
                retryAfter = limit?.retryAfter ?? Double(response.headers["retry-after"] ?? "") ?? 1
                global = limit?.global == true || response.headers["x-ratelimit-global"] == "true"
            }
            if let rateLimits = self.rateLimits {
                do {
                    try await rateLimits.record(route, response: response, retryAfter: retryAfter, global: global)
                } catch {
                    self.logger.warning("cannot record rate limits in Redis", metadata: ["error": "\(error)"])
                }
            }
            if (200..<300).contains(response.status) { return response }
            if response.status == 429, limited < self.rateLimitRetries {
                limited += 1
                attempt -= 1
                let wait = Duration.milliseconds(Int(((retryAfter ?? 1) * 1000).rounded(.up)))
                self.logger.warning(
                    "rate limited by Discord",
                    metadata: ["route": "\(route)", "retry_after_ms": "\(wait)", "global": "\(global)",
                               "scope": "\(response.headers["x-ratelimit-scope"] ?? "unknown")"]
                )
                // With shared limits the next acquire waits for the recorded block; without, wait here.
                if self.rateLimits == nil { try await Self.pause(wait, method: method, path: path) }
                continue
            }
            // Only failures have an error body worth decoding.
            let body = try? JSONDecoder().decode(DiscordErrorBody.self, from: Data(response.body))
            let failure = DiscordRESTError(
                status: response.status, code: body?.code,
                message: body?.message ?? String(decoding: response.body.prefix(200), as: UTF8.self),
                method: method, path: path
            )
            guard response.status >= 500, attempt < self.attempts else { throw failure }
            self.logger.warning("Discord answered with a server error, retrying", metadata: ["error": "\(failure)"])
            try await Self.pause(Self.backoff(attempt), method: method, path: path)
        }
    }

    /// Waits before trying again; a cancelled caller stops with an error instead of going round without waiting.
    private static func pause(_ duration: Duration, method: String, path: String) async throws(DiscordRESTError) {
        guard await Backoff.sleep(duration) else {
            throw DiscordRESTError(status: nil, code: nil, message: "cancelled while waiting to send", method: method, path: path)
        }
    }

    /// Waits until the shared limits let a request on `route` go.
    private func waitForSlot(_ route: RESTRoute, method: String, path: String) async throws(DiscordRESTError) {
        guard let rateLimits = self.rateLimits else { return }
        while true {
            let decision: SharedRateLimits.Decision
            do {
                decision = try await rateLimits.acquire(route)
            } catch {
                throw DiscordRESTError(status: nil, code: nil, message: "rate-limit state in Redis unavailable: \(error)",
                                       method: method, path: path)
            }
            switch decision {
            case .go:
                return
            case .wait(let duration, let reason):
                self.counters.waited(duration, reason: reason)
                try await Self.pause(duration, method: method, path: path)
            case .braked(let duration):
                self.counters.braked()
                throw DiscordRESTError(
                    status: nil, code: nil,
                    message: "not sent: too many 401/403/429 answers in the last 10 minutes (braking for \(duration) to stay clear of Discord's ban)",
                    method: method, path: path
                )
            }
        }
    }

    /// `GET /gateway/bot`.
    public func gatewayBot() async throws(DiscordRESTError) -> GatewayBot {
        let response = try await self.send("GET", "/gateway/bot")
        do {
            return try JSONDecoder().decode(GatewayBot.self, from: Data(response.body))
        } catch {
            throw DiscordRESTError(status: response.status, code: nil, message: "unreadable answer: \(error)",
                                   method: "GET", path: "/gateway/bot")
        }
    }

    /// Capped exponential backoff with full jitter.
    static func backoff(_ attempt: Int) -> Duration {
        let cap = min(5_000, 250 << min(attempt, 5))
        return .milliseconds(Int.random(in: cap / 2...cap))
    }
}

/// A 429's body: `{"message":"You are being rate limited.","retry_after":1.5,"global":false}`.
struct RateLimitBody: Decodable {
    var retryAfter: Double?
    var global: Bool?
    private enum CodingKeys: String, CodingKey { case retryAfter = "retry_after", global }
}

/// What a REST client has seen: answers by status, 429s, and time spent waiting for buckets.
public final class RESTCounters: Sendable {
    public struct Snapshot: Sendable, Hashable {
        public var byStatus: [Int: Int] = [:]
        public var waitedMilliseconds = 0
        /// Waits for a slot, by reason.
        public var waits: [SharedRateLimits.WaitReason: Int] = [:]
        /// Requests not sent because the brake was on.
        public var braked = 0
        public var rateLimited: Int { self.byStatus[429, default: 0] }
    }

    private let state = Mutex(Snapshot())

    public init() {}

    /// Creates the unlabelled series at 0, so that rate() and increase() see the first event; called by the role
    /// once metrics are set up.
    public static func registerMetrics() {
        Counter(label: "markov_rest_rate_limited_total").increment(by: 0)
        Counter(label: "markov_rest_bucket_wait_milliseconds_total").increment(by: 0)
        Counter(label: "markov_rest_braked_total").increment(by: 0)
        for reason in SharedRateLimits.WaitReason.allCases {
            Counter(label: "markov_rest_waits_total", dimensions: [("reason", reason.rawValue)]).increment(by: 0)
        }
    }

    public var snapshot: Snapshot { self.state.withLock { $0 } }

    func count(status: Int) {
        self.state.withLock { $0.byStatus[status, default: 0] += 1 }
        Counter(label: "markov_rest_requests_total", dimensions: [("status", "\(status)")]).increment()
        if status == 429 { Counter(label: "markov_rest_rate_limited_total").increment() }
    }

    func waited(_ duration: Duration, reason: SharedRateLimits.WaitReason) {
        let milliseconds = Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
        self.state.withLock {
            $0.waitedMilliseconds += milliseconds
            $0.waits[reason, default: 0] += 1
        }
        Counter(label: "markov_rest_bucket_wait_milliseconds_total").increment(by: milliseconds)
        Counter(label: "markov_rest_waits_total", dimensions: [("reason", reason.rawValue)]).increment()
    }

    /// A request not sent because the brake is on.
    func braked() {
        self.state.withLock { $0.braked += 1 }
        Counter(label: "markov_rest_braked_total").increment()
    }
}
