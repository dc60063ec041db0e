import DiscordProtocol
import Foundation
import Logging

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

    public static let userAgent = "DiscordBot (https://github.com/markov-bot/markov, 0.1)"

    public init(apiURL: String, token: String, http: CurlHTTPClient = CurlHTTPClient(), logger: Logger) {
        self.apiURL = apiURL.hasSuffix("/") ? String(apiURL.dropLast()) : apiURL
        self.token = token
        self.http = http
        self.logger = logger
    }

    /// Sends a request; 2xx answers come back, everything else throws.
    public func send(_ method: String, _ path: String, json body: [UInt8]? = nil) async throws(DiscordRESTError) -> HTTPResponse {
        var headers = [("Authorization", "Bot \(self.token)"), ("User-Agent", Self.userAgent)]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        let request = HTTPRequest(method: method, url: self.apiURL + path, headers: headers, body: body)
        var attempt = 0
        while true {
            attempt += 1
            let response: HTTPResponse
            do {
                response = try await self.http.perform(request)
            } catch {
                let failure = DiscordRESTError(status: nil, code: nil, message: "\(error)", method: method, path: path)
                guard attempt < self.attempts else { throw failure }
                self.logger.warning("Discord request failed, retrying", metadata: ["error": "\(failure)"])
                try? await Task.sleep(for: Self.backoff(attempt))
                continue
            }
            if (200..<300).contains(response.status) { return response }
            let body = try? JSONDecoder().decode(DiscordErrorBody.self, from: Data(response.body))
            let failure = DiscordRESTError(
                status: response.status, code: body?.code,
                message: body?.message ?? String(decoding: response.body.prefix(200), as: UTF8.self),
                method: method, path: path
            )
            guard response.status >= 500, attempt < self.attempts else { throw failure }
            self.logger.warning("Discord answered with a server error, retrying", metadata: ["error": "\(failure)"])
            try? await Task.sleep(for: Self.backoff(attempt))
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
