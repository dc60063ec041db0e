import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The fake's REST routes. Every request is recorded (method, path and body) for assertions.
final class RESTHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let fake: FakeDiscord
    private let request = NIOLockedValueBox<(head: HTTPRequestHead, body: ByteBuffer)?>(nil)

    init(fake: FakeDiscord) { self.fake = fake }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.request.withLockedValue { $0 = (head, ByteBuffer()) }
        case .body(var chunk):
            _ = self.request.withLockedValue { $0?.body.writeBuffer(&chunk) }
        case .end:
            guard let (head, body) = self.request.withLockedValue({ request in
                defer { request = nil }
                return request
            }) else { return }
            let parts = head.uri.split(separator: "?", maxSplits: 1).map(String.init)
            let path = parts.first ?? head.uri
            let answer = self.fake.handleREST(
                method: head.method.rawValue, path: path, query: parts.count > 1 ? parts[1] : "", authorization: head.headers.first(name: "Authorization"),
                contentType: head.headers.first(name: "Content-Type"), body: Array(body.readableBytesView)
            )
            self.fake.recordHTTP("\(head.method.rawValue) \(path)")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: "\(answer.body.utf8.count)")
            for (name, value) in answer.headers { headers.add(name: name, value: value) }
            let response = HTTPResponseHead(version: head.version, status: .init(statusCode: answer.status), headers: headers)
            context.write(Self.wrapOutboundOut(.head(response)), promise: nil)
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer.body)))), promise: nil)
            context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
