import CompressNIO
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket

/// A gateway session of the fake: its sequence numbers and every dispatch, for RESUME replays.
final class FakeSession: Sendable {
    let id: String
    let shard: Int
    /// The intents it was identified with.
    let intents: Int
    private struct State {
        var sequence = 0
        var sent: [(sequence: Int, payload: String)] = []
        var connection: FakeConnection?
    }
    private let state = NIOLockedValueBox(State())

    init(id: String, shard: Int, intents: Int) {
        self.id = id
        self.shard = shard
        self.intents = intents
    }

    func attach(_ connection: FakeConnection) { self.state.withLockedValue { $0.connection = connection } }

    func detach(_ connection: FakeConnection) {
        self.state.withLockedValue { if $0.connection === connection { $0.connection = nil } }
    }

    /// Numbers, keeps and (when connected) sends one dispatch, under one lock so the wire order is the seq order.
    @discardableResult
    func dispatch(event: String, json: String) -> Int {
        self.state.withLockedValue { state in
            state.sequence += 1
            let payload = "{\"op\":0,\"s\":\(state.sequence),\"t\":\"\(event)\",\"d\":\(json)}"
            state.sent.append((state.sequence, payload))
            state.connection?.send(payload)
            return state.sequence
        }
    }

    /// Replays every dispatch after `sequence` on `connection`, then RESUMED.
    func resume(on connection: FakeConnection, after sequence: Int) {
        self.state.withLockedValue { state in
            state.connection = connection
            let start = state.sent.firstIndex { $0.sequence > sequence } ?? state.sent.endIndex
            for item in state.sent[start...] { connection.send(item.payload, flush: false) }
            state.sequence += 1
            let resumed = "{\"op\":0,\"s\":\(state.sequence),\"t\":\"RESUMED\",\"d\":{}}"
            state.sent.append((state.sequence, resumed))
            connection.send(resumed)
        }
    }
}

/// One WebSocket connection to the fake gateway.
final class FakeConnection: Sendable {
    let channel: any Channel
    let compress: Bool
    private let fake: FakeDiscord

    /// Unchecked: the compressor (a zlib stream) is only touched under the lock.
    private struct State: @unchecked Sendable {
        var compressor: ZlibCompressor?
        var session: FakeSession?
        var shard: Int?
        var payloadTimes: [ContinuousClock.Instant] = []
        var closing = false
    }
    private let state: NIOLockedValueBox<State>

    init(channel: any Channel, compress: Bool, fake: FakeDiscord) {
        self.channel = channel
        self.compress = compress
        self.fake = fake
        var state = State()
        if compress { state.compressor = try? ZlibCompressor(algorithm: .zlib) }
        self.state = NIOLockedValueBox(state)
    }

    var session: FakeSession? { self.state.withLockedValue { $0.session } }
    var sessionID: String? { self.session?.id }
    var shard: Int? { self.state.withLockedValue { $0.shard } }

    func attach(session: FakeSession, shard: Int) {
        self.state.withLockedValue {
            $0.session = session
            $0.shard = shard
        }
    }

    func sendHello() {
        self.send("{\"op\":10,\"d\":{\"heartbeat_interval\":\(self.fake.configuration.heartbeatInterval)}}")
    }

    /// Counts one client payload; false when it breaks the per-minute budget.
    func countPayload(limit: Int) -> Bool {
        let now = ContinuousClock.now
        return self.state.withLockedValue { state in
            state.payloadTimes.removeAll { now - $0 >= .seconds(60) }
            state.payloadTimes.append(now)
            return state.payloadTimes.count <= limit
        }
    }

    /// Sends one payload: a text frame, or with zlib-stream the next deflated chunk (sync flush) as binary.
    /// Every send goes through the event loop's queue, compressed there, so the wire order (and the one zlib
    /// stream) follows the order of the calls whichever thread makes them.
    func send(_ text: String, flush: Bool = true) {
        guard !self.state.withLockedValue({ $0.closing }) else { return }
        self.channel.eventLoop.execute {
            // The frame is made under the lock (the zlib stream is shared); the write happens outside it, since
            // a failing write can close the channel and call back into this connection.
            let frame = self.state.withLockedValue { state -> WebSocketFrame? in
                var data = self.channel.allocator.buffer(capacity: text.utf8.count)
                data.writeString(text)
                guard let compressor = state.compressor else {
                    return WebSocketFrame(fin: true, opcode: .text, data: data)
                }
                var output = self.channel.allocator.buffer(capacity: compressor.maxSize(from: data) + 16)
                guard (try? compressor.deflate(from: &data, to: &output, flush: .sync)) != nil else { return nil }
                return WebSocketFrame(fin: true, opcode: .binary, data: output)
            }
            guard let frame else { return }
            if flush {
                self.channel.writeAndFlush(frame, promise: nil)
            } else {
                self.channel.write(frame, promise: nil)
            }
        }
    }

    /// Whether the fake started closing this connection (the client's answering close code is then not its own).
    var isClosing: Bool { self.state.withLockedValue { $0.closing } }

    /// Closes with a close code, as Discord does.
    func close(code: Int) {
        self.state.withLockedValue { state in
            guard !state.closing else { return }
            state.closing = true
            let channel = self.channel
            channel.eventLoop.execute {
                var data = channel.allocator.buffer(capacity: 2)
                data.write(webSocketErrorCode: WebSocketErrorCode(codeNumber: code))
                let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
                channel.writeAndFlush(frame).whenComplete { _ in
                    // Give the client a moment to answer, then drop the socket.
                    channel.eventLoop.scheduleTask(in: .milliseconds(200)) { channel.close(promise: nil) }
                }
            }
        }
    }
}

/// Reads a connection's WebSocket frames and hands text payloads to the fake.
final class GatewayConnectionHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let connection: FakeConnection
    private let fake: FakeDiscord
    private let text = NIOLockedValueBox<ByteBuffer?>(nil)
    private let clientCode = NIOLockedValueBox<Int?>(nil)

    init(connection: FakeConnection, fake: FakeDiscord) {
        self.connection = connection
        self.fake = fake
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .continuation:
            var payload = frame.unmaskedData
            let complete = self.text.withLockedValue { buffer -> ByteBuffer? in
                if buffer == nil { buffer = payload } else { buffer!.writeBuffer(&payload) }
                guard frame.fin else { return nil }
                defer { buffer = nil }
                return buffer
            }
            if let complete { self.fake.received(String(buffer: complete), on: self.connection) }
        case .binary:
            self.connection.close(code: 4002)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            // The client's answer to a close the fake started: nothing to echo, and not the client's own code.
            if self.connection.isClosing {
                context.close(promise: nil)
                return
            }
            var data = frame.unmaskedData
            let code = data.readWebSocketErrorCode().map { Int(UInt16(webSocketErrorCode: $0)) }
            self.clientCode.withLockedValue { $0 = code }
            // Echo the close, then drop the socket.
            var echo = context.channel.allocator.buffer(capacity: 2)
            if let code { echo.write(webSocketErrorCode: WebSocketErrorCode(codeNumber: code)) }
            let reply = WebSocketFrame(fin: true, opcode: .connectionClose, data: echo)
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(reply)).whenComplete { _ in channel.close(promise: nil) }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.fake.closed(self.connection, clientCode: self.clientCode.withLockedValue { $0 })
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
