import DiscordResponder
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MarkovChains
import MarkovCore
import NIOCore
import ServiceLifecycle
import Synchronization

// The endpoints (docs/web-console.md). Every answer of /api is JSON (`{"error": "…"}` with a 4xx or 5xx status
// when something is wrong) except /api/events, a stream of Server-Sent Events.
extension WebConsole {
    func routes(_ router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in self.assets.response("index.html") }
        router.get("console.js") { _, _ in self.assets.response("console.js") }
        router.get("console.css") { _, _ in self.assets.response("console.css") }

        router.get("api/info") { _, _ in
            Self.json(Info(
                guild: self.conversation.guild.rawValue, prefix: self.conversation.prefix, stateSize: self.store.stateSize,
                discord: self.rateLimits != nil, maxMessageLength: ConsoleConversation.maxLength,
                maxUploadBytes: self.configuration.maxUploadBytes
            ))
        }
        router.post("api/messages") { request, _ in try await self.message(request) }
        router.get("api/state") { request, _ in try await self.state(request) }
        router.post("api/imports") { request, _ in try await self.upload(request) }
        router.get("api/imports/:id") { _, context in
            guard let id = context.parameters.get("id"), let status = self.imports.status(id) else {
                return Self.error(.notFound, "no such import")
            }
            return Self.json(status)
        }
        router.get("api/stats") { _, _ in
            do {
                let footprint = try await self.store.footprint(guild: self.conversation.guild)
                return Self.json(try await self.guildStats(footprint: (footprint, .zero)))
            } catch {
                return Self.error(.serviceUnavailable, "Redis did not answer: \(error)")
            }
        }
        router.get("api/events") { _, _ in self.events() }
        router.get("api/system") { _, _ in
            // One sample now, for scripts and tests; its rates cover the time since the previous call.
            var sampler = self.systemSampler.withLock { $0 }
            let tick = await self.sample(&sampler, footprint: nil)
            self.systemSampler.withLock { $0 = sampler }
            return Self.json(encoded: tick)
        }
    }

    struct Info: Encodable {
        var guild: String
        var prefix: String
        var stateSize: Int
        var discord: Bool
        var maxMessageLength: Int
        var maxUploadBytes: Int
    }

    // MARK: Chat

    struct MessageRequest: Decodable {
        var text: String
    }

    struct MessageAnswer: Encodable {
        struct Step: Encodable {
            var token: String
            var count: Int
            var total: Int
            var probability: Double
        }

        var kind: String
        var messageID: String?
        var text: String?
        var help: Bool?
        var steps: [Step]?
        var notes: String?
        var tries: Int?
    }

    /// `POST /api/messages` `{"text": "…"}`: learnt, or answered as Discord would answer it.
    private func message(_ request: Request) async throws -> Response {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: self.configuration.maxBodyBytes)
        } catch {
            return Self.error(.contentTooLarge, "a message is at most \(ConsoleConversation.maxLength) characters (Discord's limit)")
        }
        guard let message = try? JSONDecoder().decode(MessageRequest.self, from: Data(body.readableBytesView)) else {
            return Self.error(.badRequest, "the body must be JSON in UTF-8: {\"text\": \"…\"}")
        }
        let outcome: ConsoleConversation.Outcome
        do {
            outcome = try await self.conversation.handle(message.text, steps: true)
        } catch let error as ConsoleConversation.InputError {
            return Self.error(.badRequest, error.description)
        } catch {
            self.logger.warning("web console message failed", metadata: ["error": "\(error)"])
            return Self.error(.serviceUnavailable, "Redis did not answer: \(error)")
        }
        switch outcome {
        case .learnt(let id):
            return Self.json(MessageAnswer(kind: "learnt", messageID: id))
        case .ignored:
            return Self.json(MessageAnswer(kind: "ignored"))
        case .reply(let answer, let help):
            return Self.json(MessageAnswer(
                kind: "reply", text: answer.text, help: help,
                steps: answer.steps.map { .init(token: $0.token, count: $0.count, total: $0.total, probability: $0.probability) },
                notes: answer.notes, tries: answer.tries
            ))
        }
    }

    // MARK: Inspect

    struct StateAnswer: Encodable {
        struct Successor: Encodable {
            var token: String
            var count: Int
            var probability: Double
        }

        var state: [String]
        var kind: String
        var bucket: String
        var total: Int
        var successors: [Successor]
        /// Successors not listed (the list keeps the most likely 200).
        var more: Int
        var sampling: [String: String]
        /// A big state whose alias table has increments or decrements not folded in yet.
        var pending: Bool
    }

    /// `GET /api/state?words=w1%20w2`: a state's successors (leave words out at the start for a message's start).
    private func state(_ request: Request) async throws -> Response {
        let words = String(request.uri.queryParameters.get("words") ?? "")
        guard !words.contains("\0") else { return Self.error(.badRequest, "a state cannot contain NUL characters") }
        guard words.utf8.count <= 1000 else { return Self.error(.badRequest, "a state is at most 1000 bytes") }
        let size = self.store.stateSize
        var tokens = words.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        while tokens.count < size { tokens.insert("", at: 0) }
        let state = Array(tokens.suffix(size))
        let table: ChainStore.StateTable
        do {
            table = try await self.store.state(state, guild: self.conversation.guild)
        } catch {
            return Self.error(.serviceUnavailable, "Redis did not answer: \(error)")
        }
        let total = table.successors.reduce(0) { $0 + $1.count }
        let sorted = table.successors.sorted { $0.count != $1.count ? $0.count > $1.count : $0.token < $1.token }
        let sampling = Dictionary(table.sampling, uniquingKeysWith: { $1 })
        let pending = (Int(sampling["pending_increments"] ?? "") ?? 0) > 0 || (Int(sampling["pending_decrements"] ?? "") ?? 0) > 0
        return Self.json(StateAnswer(
            state: state, kind: table.kind, bucket: table.bucketKey, total: total,
            successors: sorted.prefix(200).map { .init(token: $0.token, count: $0.count, probability: total > 0 ? Double($0.count) / Double(total) : 0) },
            more: max(0, sorted.count - 200), sampling: sampling, pending: pending
        ))
    }

    // MARK: Imports

    struct UploadAnswer: Encodable {
        var id: String
    }

    /// `POST /api/imports?name=file.json` with the file as the body: kept on disk while it uploads, then
    /// imported; answers 202 with the import's id (`GET /api/imports/<id>` and the event stream follow it).
    private func upload(_ request: Request) async throws -> Response {
        let name = String((request.uri.queryParameters.get("name") ?? "upload").prefix(200))
        let limit = self.configuration.maxUploadBytes
        let tooLarge = "a history file is at most \(limit >> 20) MiB here"
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            return Self.error(.contentTooLarge, tooLarge)
        }
        let id = UUID().uuidString.lowercased().prefix(12).description
        let path = self.configuration.uploadDirectory + "/markov-import-\(id)"
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: path)
        else {
            return Self.error(.internalServerError, "cannot write the upload to \(self.configuration.uploadDirectory)")
        }
        // A graceful shutdown cuts an upload still arriving (a stalled client must not hold the stop up).
        let size: Int
        do {
            size = try await cancelWhenGracefulShutdown {
                defer { try? handle.close() }
                var size = 0
                for try await buffer in request.body {
                    size += buffer.readableBytes
                    guard size <= limit else { return size }
                    try handle.write(contentsOf: Data(buffer.readableBytesView))
                }
                return size
            }
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            if Task.isShuttingDownGracefully { return Self.error(.serviceUnavailable, "the console is stopping") }
            return Self.error(.badRequest, "the upload did not arrive whole: \(error)")
        }
        guard size <= limit else {
            try? FileManager.default.removeItem(atPath: path)
            return Self.error(.contentTooLarge, tooLarge)
        }
        guard size > 0 else {
            try? FileManager.default.removeItem(atPath: path)
            return Self.error(.badRequest, "the file is empty")
        }
        guard self.imports.add(.init(id: id, name: name, file: path)) else {
            try? FileManager.default.removeItem(atPath: path)
            return Self.error(.serviceUnavailable, "the console is stopping")
        }
        self.logger.info("web console import queued", metadata: ["import": "\(id)", "file": "\(name)", "bytes": "\(size)"])
        var response = Self.json(UploadAnswer(id: id))
        response.status = .accepted
        return response
    }

    // MARK: Live updates

    /// `GET /api/events`: a `tick` event a second (guild totals and bytes, the metrics as rates, imports, and
    /// with Discord the rate limits), until the page goes or the console stops. EventSource reconnects on its own.
    private func events() -> Response {
        let samples = self.monitor.listen()
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
            for await sample in samples {
                var buffer = ByteBuffer(string: "event: tick\ndata: ")
                buffer.writeBytes(sample)
                buffer.writeString("\n\n")
                try await writer.write(buffer)
            }
            try await writer.finish(nil)
        })
    }

    // MARK: Answers

    static func json(_ value: some Encodable) -> Response {
        Self.json(encoded: (try? JSONEncoder.console.encode(value)) ?? Data("{}".utf8))
    }

    static func json(encoded data: Data) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var response = Self.json(["error": message])
        response.status = status
        return response
    }
}

/// Who may use the console. Everything but the page's three static files is guarded (whatever the spelling of the
/// path: `//api/info` reaches the same handler as `/api/info`):
/// - with a token, only requests that carry it (`?token=` or `X-Markov-Token`);
/// - without, only requests addressed to a loopback name (a page of another site that rebinds its name to
///   127.0.0.1 is refused);
/// - a request a browser marks as cross-site (`Sec-Fetch-Site: cross-site`) is refused, and a POST must carry
///   `X-Markov-Console`, which a cross-site form cannot send.
struct Guard<Context: RequestContext>: RouterMiddleware {
    let token: String?
    let logger: Logger

    static var tokenHeader: HTTPField.Name { HTTPField.Name("X-Markov-Token")! }
    static var consoleHeader: HTTPField.Name { HTTPField.Name("X-Markov-Console")! }
    static var fetchSiteHeader: HTTPField.Name { HTTPField.Name("Sec-Fetch-Site")! }
    /// The paths served to anyone: the page itself holds nothing of the chains.
    static var open: Set<String> { ["/", "/console.js", "/console.css"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !(request.method == .get && Self.open.contains(request.uri.path)) else {
            var response = try await next(request, context)
            // No other site may frame the page.
            response.headers[HTTPField.Name("Content-Security-Policy")!] = "frame-ancestors 'none'"
            return response
        }
        if let token = self.token {
            let given = request.uri.queryParameters.get("token").map { String($0) } ?? request.headers[Self.tokenHeader] ?? ""
            guard Self.same(given, token) else {
                return WebConsole.error(.unauthorized, "this console needs its token: open the URL `markov up` printed (a restart makes a new one)")
            }
        } else {
            let authority = request.head.authority ?? ""
            let host = authority.hasPrefix("[") ? String(authority.prefix { $0 != "]" }.dropFirst()) : String(authority.prefix { $0 != ":" })
            guard ["127.0.0.1", "localhost", "::1"].contains(host.lowercased()) else {
                return WebConsole.error(.forbidden, "the console answers only requests to 127.0.0.1 or localhost (this one was for \"\(authority)\")")
            }
        }
        if request.headers[Self.fetchSiteHeader] == "cross-site" {
            return WebConsole.error(.forbidden, "cross-site requests are refused")
        }
        if request.method == .post && request.headers[Self.consoleHeader] == nil {
            return WebConsole.error(.forbidden, "a POST needs the header X-Markov-Console (cross-site requests are refused)")
        }
        return try await next(request, context)
    }

    /// Compares in time independent of where the texts differ.
    static func same(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// The page's files, from the package's resources, read once at start.
struct Assets: Sendable {
    let files: [String: (data: Data, type: String)]

    static let names = ["index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"]

    static func load() throws -> Assets {
        var files: [String: (Data, String)] = [:]
        for (name, type) in Self.names {
            let url = Bundle.module.resourceURL?.appendingPathComponent("Assets").appendingPathComponent(name)
            guard let url, let data = try? Data(contentsOf: url) else {
                throw ConsoleConversation.InputError(description: "the web console's \(name) is missing from \(Bundle.module.bundlePath) (install the markov_LocalConsole.resources folder beside the binary)")
            }
            files[name] = (data, type)
        }
        return Assets(files: files)
    }

    func response(_ name: String) -> Response {
        guard let file = self.files[name] else { return WebConsole.error(.notFound, "no such file") }
        var headers = HTTPFields()
        headers[.contentType] = file.type
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: file.data)))
    }
}
