import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The fake's REST routes. Every request is recorded (method and path) for assertions.
final class RESTHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let fake: FakeDiscord
    private let head = NIOLockedValueBoxHead()

    init(fake: FakeDiscord) { self.fake = fake }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head.set(head)
        case .body:
            break
        case .end:
            guard let head = self.head.take() else { return }
            let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
            self.fake.recordHTTP("\(head.method.rawValue) \(path)")
            let (status, body) = self.route(method: head.method, path: path, headers: head.headers)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            let response = HTTPResponseHead(version: head.version, status: status, headers: headers)
            context.write(Self.wrapOutboundOut(.head(response)), promise: nil)
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    private func route(method: HTTPMethod, path: String, headers: HTTPHeaders) -> (HTTPResponseStatus, String) {
        guard headers.first(name: "Authorization") == "Bot \(self.fake.configuration.token)" else {
            return (.unauthorized, "{\"message\":\"401: Unauthorized\",\"code\":0}")
        }
        switch (method, path) {
        case (.GET, "/api/v10/gateway/bot"):
            let configuration = self.fake.configuration
            let remaining = self.fake.state.withLockedValue { $0.identifiesRemaining }
            return (.ok, """
                {"url":"ws://127.0.0.1:\(self.fake.port)/gateway","shards":\(configuration.shards),\
                "session_start_limit":{"total":\(configuration.identifiesRemaining),"remaining":\(remaining),\
                "reset_after":14400000,"max_concurrency":\(configuration.maxConcurrency)}}
                """)
        default:
            return (.notFound, "{\"message\":\"404: Not Found\",\"code\":0}")
        }
    }
}

/// The request head between `.head` and `.end`.
private final class NIOLockedValueBoxHead: Sendable {
    private let box = NIOLockedValueBox<HTTPRequestHead?>(nil)
    func set(_ head: HTTPRequestHead) { self.box.withLockedValue { $0 = head } }
    func take() -> HTTPRequestHead? {
        self.box.withLockedValue { head in
            defer { head = nil }
            return head
        }
    }
}
