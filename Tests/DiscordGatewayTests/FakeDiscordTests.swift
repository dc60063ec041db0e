import DiscordProtocol
import DiscordREST
import FakeDiscord
import Foundation
import Logging
import NIOWebSocket
import Testing
import WSClient

/// The fake's own rules, checked with a plain WebSocket client: the gateway tests rely on them.
@Suite("Fake Discord") struct FakeDiscordTests {
    static let logger: Logger = {
        var logger = Logger(label: "fake-tests")
        logger.logLevel = .critical
        return logger
    }()

    /// Connects, runs `script` with the outbound writer once Hello arrived, and returns the server's close code.
    func session(_ fake: FakeDiscord, _ script: @escaping @Sendable (WebSocketOutboundWriter) async throws -> Void) async throws -> Int? {
        let frame = try await WebSocketClient.connect(
            url: fake.gatewayURL + "/?v=10&encoding=json", configuration: .init(maxFrameSize: 1 << 20), logger: Self.logger
        ) { inbound, outbound, _ in
            var hello = false
            for try await message in inbound.messages(maxSize: 1 << 20) {
                if !hello, case .text(let text) = message, text.contains("\"op\":10") {
                    hello = true
                    try await script(outbound)
                }
            }
        }
        return frame.map { Int(UInt16(webSocketErrorCode: $0.closeCode)) }
    }

    @Test("more than 120 payloads a minute close with 4008")
    func sendBudget() async throws {
        let fake = FakeDiscord(logger: Self.logger)
        try await fake.start()
        let code = try await self.session(fake) { outbound in
            for _ in 0..<121 { try await outbound.write(.text(#"{"op":1,"d":null}"#)) }
        }
        #expect(code == 4008)
        #expect(fake.violations.contains("send budget exceeded"))
        await fake.stop()
    }

    @Test("payloads over 4096 bytes close with 4002; unknown opcodes with 4001; a second identify with 4005")
    func badPayloads() async throws {
        let fake = FakeDiscord(logger: Self.logger)
        try await fake.start()
        let big = #"{"op":1,"d":""# + String(repeating: "x", count: 4100) + #""}"#
        #expect(try await self.session(fake) { try await $0.write(.text(big)) } == 4002)
        #expect(try await self.session(fake) { try await $0.write(.text(#"{"op":42}"#)) } == 4001)
        let identify = #"{"op":2,"d":{"token":"fake-token","intents":33281,"shard":[0,1],"properties":{}}}"#
        #expect(try await self.session(fake) { outbound in
            try await outbound.write(.text(identify))
            try await outbound.write(.text(identify))
        } == 4005)
        await fake.stop()
    }

    @Test("identify checks: token 4004, shard 4010, intents 4013")
    func identifyChecks() async throws {
        let fake = FakeDiscord(logger: Self.logger)
        try await fake.start()
        @Sendable func identify(token: String = "fake-token", shard: String = "[0,1]", intents: Int = 33281) -> String {
            #"{"op":2,"d":{"token":"\#(token)","intents":\#(intents),"shard":\#(shard),"properties":{}}}"#
        }
        #expect(try await self.session(fake) { try await $0.write(.text(identify(token: "nope"))) } == 4004)
        #expect(try await self.session(fake) { try await $0.write(.text(identify(shard: "[3,2]"))) } == 4010)
        #expect(try await self.session(fake) { try await $0.write(.text(identify(intents: -1))) } == 4013)
        await fake.stop()
    }

    @Test("discovery answers with the token, and a wrong token is a clear 401 error")
    func discovery() async throws {
        var configuration = FakeDiscord.Configuration()
        configuration.shards = 3
        configuration.maxConcurrency = 2
        let fake = FakeDiscord(configuration: configuration, logger: Self.logger)
        try await fake.start()
        let bot = try await DiscordRESTClient(apiURL: fake.apiURL, token: "fake-token", logger: Self.logger).gatewayBot()
        #expect(bot.shards == 3)
        #expect(bot.sessionStartLimit.maxConcurrency == 2)
        #expect(bot.url == fake.gatewayURL)
        do {
            _ = try await DiscordRESTClient(apiURL: fake.apiURL, token: "wrong", logger: Self.logger).gatewayBot()
            Issue.record("a wrong token was accepted")
        } catch {
            #expect(error.status == 401)
            #expect(error.description.contains("401: Unauthorized"))
            #expect(!error.description.contains("wrong"), "the token never appears in errors")
        }
        await fake.stop()
    }
}
