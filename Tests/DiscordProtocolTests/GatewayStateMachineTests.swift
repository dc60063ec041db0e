import DiscordProtocol
import Foundation
import MarkovCore
import Testing

/// Every transition of the gateway connection state machine, without sockets.
@Suite struct GatewayStateMachineTests {
    let shard = ShardID(id: 1, count: 4)

    func frame(_ json: String) throws -> GatewayFrame { try GatewayFrame.decode(Data(json.utf8)) }

    var hello: String { #"{"op":10,"d":{"heartbeat_interval":41250},"s":null,"t":null}"# }
    var ready: String {
        #"{"op":0,"s":1,"t":"READY","d":{"v":10,"session_id":"abc","resume_gateway_url":"wss://resume.example","user":{"id":"42","bot":true},"application":{"id":"43"},"shard":[1,4],"guilds":[]}}"#
    }

    func readyMachine() throws -> GatewayStateMachine {
        var machine = GatewayStateMachine(shard: self.shard)
        machine.connected()
        _ = machine.received(try self.frame(self.hello))
        _ = machine.received(try self.frame(self.ready))
        return machine
    }

    @Test func helloWithoutSessionIdentifies() throws {
        var machine = GatewayStateMachine(shard: self.shard)
        #expect(machine.state == .disconnected)
        #expect(machine.connectURL == nil)
        machine.connected()
        #expect(machine.state == .awaitingHello)
        let actions = machine.received(try self.frame(self.hello))
        #expect(machine.state == .identifying)
        guard actions.count == 2, case .startHeartbeating(let interval) = actions[0], case .identify = actions[1] else {
            Issue.record("unexpected \(actions)")
            return
        }
        #expect(interval == .milliseconds(41250))
    }

    @Test func readyStartsASessionAtItsResumeURL() throws {
        let machine = try self.readyMachine()
        #expect(machine.state == .ready)
        #expect(machine.session == GatewaySession(sessionID: "abc", resumeURL: "wss://resume.example", sequence: 1, shardCount: 4))
        #expect(machine.connectURL == "wss://resume.example")
        #expect(machine.lastSequence == 1)
    }

    @Test func helloWithRestoredSessionResumesFromItsSequence() throws {
        let stored = GatewaySession(sessionID: "s1", resumeURL: "wss://r", sequence: 77, shardCount: 4)
        var machine = GatewayStateMachine(shard: self.shard, restoring: stored)
        #expect(machine.connectURL == "wss://r")
        machine.connected()
        let actions = machine.received(try self.frame(self.hello))
        #expect(machine.state == .resuming)
        guard case .resume(let id, let sequence) = actions.last else { Issue.record("\(actions)"); return }
        #expect(id == "s1" && sequence == 77)
        let resumed = machine.received(try self.frame(#"{"op":0,"s":null,"t":"RESUMED","d":{}}"#))
        #expect(machine.state == .ready)
        guard case .resumed = resumed.first else { Issue.record("\(resumed)"); return }
    }

    @Test func sessionOfAnotherShardCountIsDiscarded() {
        let stored = GatewaySession(sessionID: "s1", resumeURL: "wss://r", sequence: 77, shardCount: 8)
        let machine = GatewayStateMachine(shard: self.shard, restoring: stored)
        #expect(machine.session == nil)
        #expect(machine.lastSequence == nil)
    }

    @Test func dispatchesAdvanceTheSequenceAndCheckpoint() throws {
        var machine = try self.readyMachine()
        let actions = machine.received(try self.frame(#"{"op":0,"s":2,"t":"TYPING_START","d":{}}"#))
        guard case .dispatch(let frame) = actions.first else { Issue.record("\(actions)"); return }
        #expect(frame.eventName == "TYPING_START")
        #expect(machine.lastSequence == 2)
        #expect(machine.checkpoint?.sequence == 2)
        // A replayed lower sequence never moves it back.
        _ = machine.received(try self.frame(#"{"op":0,"s":2,"t":"TYPING_START","d":{}}"#))
        #expect(machine.lastSequence == 2)
    }

    @Test func heartbeatCarriesTheLastSequenceAndZombieClosesToResume() throws {
        var machine = try self.readyMachine()
        guard case .sendHeartbeat(let sequence) = machine.heartbeatDue().first else { Issue.record("no beat"); return }
        #expect(sequence == 1)
        #expect(machine.awaitingACK)
        _ = machine.received(try self.frame(#"{"op":11}"#))
        #expect(!machine.awaitingACK)
        _ = machine.heartbeatDue()
        // No ACK before the next beat: a zombie connection.
        let zombie = machine.heartbeatDue()
        guard case .close(let code, let reason) = zombie.first else { Issue.record("\(zombie)"); return }
        #expect(code == GatewayClientCloseCode.resumable)
        #expect(reason.contains("zombie"))
        #expect(machine.state == .closing)
        // The server echoes our code; what we meant decides: resume.
        #expect(machine.closed(code: 4900) == .reconnect(resume: true, url: "wss://resume.example", delay: .zero))
        #expect(machine.state == .disconnected)
    }

    @Test func serverHeartbeatRequestIsAnsweredAtOnce() throws {
        var machine = try self.readyMachine()
        let actions = machine.received(try self.frame(#"{"op":1,"d":null}"#))
        guard case .sendHeartbeat(let sequence) = actions.first else { Issue.record("\(actions)"); return }
        #expect(sequence == 1)
    }

    @Test func noHeartbeatBeforeHello() {
        var machine = GatewayStateMachine(shard: self.shard)
        machine.connected()
        #expect(machine.heartbeatDue().isEmpty)
    }

    @Test func reconnectRequestResumes() throws {
        var machine = try self.readyMachine()
        let actions = machine.received(try self.frame(#"{"op":7,"d":null}"#))
        guard case .close(let code, _) = actions.first else { Issue.record("\(actions)"); return }
        #expect(code != 1000 && code != 1001)
        #expect(machine.closed(code: nil) == .reconnect(resume: true, url: "wss://resume.example", delay: .zero))
    }

    @Test func resumableInvalidSessionResumesAfterAPause() throws {
        var machine = try self.readyMachine()
        _ = machine.received(try self.frame(#"{"op":9,"d":true}"#))
        #expect(machine.closed(code: 4900) == .reconnect(resume: true, url: "wss://resume.example", delay: .seconds(1)))
        #expect(machine.session != nil)
    }

    @Test func nonResumableInvalidSessionIdentifiesAtDiscovery() throws {
        var machine = try self.readyMachine()
        _ = machine.received(try self.frame(#"{"op":9,"d":false}"#))
        #expect(machine.session == nil)
        #expect(machine.closed(code: 4900) == .reconnect(resume: false, url: nil, delay: .seconds(1)))
        #expect(machine.connectURL == nil)
        machine.connected()
        guard case .identify = machine.received(try self.frame(self.hello)).last else { Issue.record("no identify"); return }
    }

    @Test(arguments: [4000, 4001, 4002, 4005, 4008, 1006, 1000])
    func resumableCloseCodesResume(code: Int) throws {
        var machine = try self.readyMachine()
        #expect(machine.closed(code: code) == .reconnect(resume: true, url: "wss://resume.example", delay: .zero))
    }

    @Test func dropWithoutCloseFrameResumes() throws {
        var machine = try self.readyMachine()
        #expect(machine.closed(code: nil) == .reconnect(resume: true, url: "wss://resume.example", delay: .zero))
    }

    @Test(arguments: [4003, 4007, 4009])
    func sessionEndingCloseCodesIdentify(code: Int) throws {
        var machine = try self.readyMachine()
        #expect(machine.closed(code: code) == .reconnect(resume: false, url: nil, delay: .zero))
        #expect(machine.session == nil)
    }

    @Test(arguments: [
        (4004, "authentication failed"), (4010, "invalid shard"), (4011, "sharding required"), (4012, "version"),
        (4013, "invalid intents"), (4014, "MESSAGE_CONTENT"),
    ])
    func fatalCloseCodesStopWithTheirCause(code: Int, cause: String) throws {
        var machine = try self.readyMachine()
        guard case .stop(let reason) = machine.closed(code: code) else { Issue.record("did not stop"); return }
        #expect(reason.contains(cause))
        #expect(reason.contains("\(code)"))
        guard case .stopped = machine.state else { Issue.record("\(machine.state)"); return }
        // Stopped stays stopped.
        guard case .stop = machine.closed(code: nil) else { Issue.record("restarted"); return }
    }

    @Test func shutdownClosesResumablyAndStops() throws {
        var machine = try self.readyMachine()
        guard case .close(let code, _) = machine.shutdown().first else { Issue.record("no close"); return }
        #expect(code == GatewayClientCloseCode.resumable)
        guard case .stop = machine.closed(code: 4900) else { Issue.record("did not stop"); return }
        #expect(machine.session != nil)  // kept for whoever runs the shard next
    }

    @Test func closeToResumeIsIdempotentWhileClosing() throws {
        var machine = try self.readyMachine()
        #expect(machine.closeToResume(reason: "x").count == 1)
        #expect(machine.closeToResume(reason: "x").isEmpty)
    }
}

@Suite struct GatewayPayloadTests {
    @Test func identifyPayloadMatchesDiscordsShape() throws {
        let json = GatewayCommand.identify(token: "t\"k", intents: .default, shard: ShardID(id: 2, count: 16), name: "markov").json
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["op"] as? Int == 2)
        let d = try #require(object["d"] as? [String: Any])
        #expect(d["token"] as? String == "t\"k")
        #expect(d["intents"] as? Int == 33281)
        #expect(d["shard"] as? [Int] == [2, 16])
        #expect((d["properties"] as? [String: String])?["os"] == "linux")
    }

    @Test func resumeAndHeartbeatPayloads() throws {
        let resume = try JSONSerialization.jsonObject(
            with: Data(GatewayCommand.resume(token: "t", sessionID: "s", sequence: 9).json.utf8)
        ) as? [String: Any]
        #expect(resume?["op"] as? Int == 6)
        #expect((resume?["d"] as? [String: Any])?["seq"] as? Int == 9)
        #expect(GatewayCommand.heartbeat(sequence: nil).json == #"{"op":1,"d":null}"#)
        #expect(GatewayCommand.heartbeat(sequence: 5).json == #"{"op":1,"d":5}"#)
    }

    @Test func messageCreateBecomesACreateEvent() throws {
        let json = #"{"op":0,"s":5,"t":"MESSAGE_CREATE","d":{"id":"1100000000000000000","channel_id":"7","guild_id":"8","author":{"id":"9","bot":true},"webhook_id":"10","content":"hi {g:1} \u0000 there","type":19,"attachments":[{"id":"1","url":"https://cdn/x.png"}]}}"#
        let frame = try GatewayFrame.decode(Data(json.utf8))
        let event = try #require(frame.chainEvent(shard: 3))
        #expect(event.kind == .create)
        #expect(event.guildID == Snowflake("8"))
        #expect(event.messageID == "1100000000000000000")
        #expect(event.authorFlags == [.bot, .webhook])
        #expect(event.messageType == 19)
        #expect(event.content == "hi {g:1} \u{0} there")
        #expect(event.attachments == ["https://cdn/x.png"])
        #expect(event.origin == "3:5")
        #expect(event.timestamp == Int64(1_100_000_000_000_000_000 >> 22) + 1_420_070_400_000)
        // The record survives the stream round trip.
        let decoded = try ChainEvent(fields: Dictionary(uniqueKeysWithValues: event.fields))
        #expect(decoded == event)
    }

    @Test func directMessagesAndOutagesAreDropped() throws {
        let dm = try GatewayFrame.decode(Data(#"{"op":0,"s":5,"t":"MESSAGE_CREATE","d":{"id":"1","channel_id":"7","content":"x"}}"#.utf8))
        #expect(dm.chainEvent(shard: 0) == nil)
        let outage = try GatewayFrame.decode(Data(#"{"op":0,"s":6,"t":"GUILD_DELETE","d":{"id":"8","unavailable":true}}"#.utf8))
        #expect(outage.chainEvent(shard: 0) == nil)
        let removed = try GatewayFrame.decode(Data(#"{"op":0,"s":7,"t":"GUILD_DELETE","d":{"id":"8"}}"#.utf8))
        #expect(removed.chainEvent(shard: 0)?.kind == .guildRemoved)
        let other = try GatewayFrame.decode(Data(#"{"op":0,"s":8,"t":"PRESENCE_UPDATE","d":{"whatever":[1,2,{"a":null}]}}"#.utf8))
        guard case .ignored = other.payload else { Issue.record("\(other.payload)"); return }
        #expect(other.sequence == 8)
        #expect(other.chainEvent(shard: 0) == nil)
    }

    @Test func updatesDeletesAndBulkDeletes() throws {
        let update = try GatewayFrame.decode(Data(#"{"op":0,"s":1,"t":"MESSAGE_UPDATE","d":{"id":"5","channel_id":"7","guild_id":"8","content":"new"}}"#.utf8))
        #expect(update.chainEvent(shard: 0)?.kind == .update)
        #expect(update.chainEvent(shard: 0)?.content == "new")
        let delete = try GatewayFrame.decode(Data(#"{"op":0,"s":2,"t":"MESSAGE_DELETE","d":{"id":"5","channel_id":"7","guild_id":"8"}}"#.utf8))
        #expect(delete.chainEvent(shard: 0)?.kind == .delete)
        let bulk = try GatewayFrame.decode(Data(#"{"op":0,"s":3,"t":"MESSAGE_DELETE_BULK","d":{"ids":["5","6"],"channel_id":"7","guild_id":"8"}}"#.utf8))
        #expect(bulk.chainEvent(shard: 0)?.messageIDs == ["5", "6"])
    }

    @Test func interactionsCarryTheirPayload() throws {
        let json = #"{"op":0,"s":4,"t":"INTERACTION_CREATE","d":{"id":"11","application_id":"12","type":2,"token":"tok","guild_id":"8","channel_id":"7","member":{"user":{"id":"9"},"permissions":"8","roles":[]},"data":{"name":"mark","options":[{"name":"seed","type":3,"value":"hello"},{"name":"debug","type":5,"value":true}]}}}"#
        let event = try #require(try GatewayFrame.decode(Data(json.utf8)).chainEvent(shard: 0))
        #expect(event.kind == .interaction)
        #expect(event.authorID == Snowflake("9"))
        let interaction = try JSONDecoder().decode(Interaction.self, from: Data(try #require(event.payload)))
        #expect(interaction.token == "tok")
        #expect(interaction.data?.options?.first?.value == .string("hello"))
        #expect(interaction.data?.options?.last?.value == .bool(true))
    }

    @Test func threadsAreRecordedWithTheirChannels() throws {
        let created = try GatewayFrame.decode(Data(#"{"op":0,"s":9,"t":"THREAD_CREATE","d":{"id":"70","type":11,"guild_id":"8","parent_id":"7","name":"t"}}"#.utf8))
        let event = try #require(created.chainEvent(shard: 0))
        #expect(event.kind == .threads)
        #expect(event.messageIDs == ["70"] && event.threadParents == ["7"])
        #expect(try ChainEvent(fields: Dictionary(uniqueKeysWithValues: event.fields)) == event)
        let guild = try GatewayFrame.decode(Data(#"{"op":0,"s":10,"t":"GUILD_CREATE","d":{"id":"8","name":"g","channels":[{"id":"7","type":0},{"id":"6","type":0,"nsfw":true},{"id":"5","type":4}],"threads":[{"id":"71","type":11,"parent_id":"7"},{"id":"72","type":12,"parent_id":"9"},{"id":"73","type":0}]}}"#.utf8))
        // GUILD_CREATE makes two events, both of its dispatch: its channels' age restriction, then its threads.
        let events = guild.chainEvents(shard: 0)
        #expect(events.map(\.kind) == [.channels, .threads])
        #expect(events.allSatisfy { $0.origin == "0:10" })
        let channels = try #require(events.first)
        #expect(channels.messageIDs == ["7", "6"] && channels.ageRestricted == [false, true], "categories are left out")
        #expect(try ChainEvent(fields: Dictionary(uniqueKeysWithValues: channels.fields)) == channels)
        let listed = try #require(events.last)
        #expect(listed.guildID == Snowflake("8"))
        #expect(listed.messageIDs == ["71", "72"] && listed.threadParents == ["7", "9"], "channels that are not threads are left out")
        // A shape not expected, or a guild without threads: ignored, never a failed frame.
        let odd = try GatewayFrame.decode(Data(#"{"op":0,"s":11,"t":"GUILD_CREATE","d":{"id":8,"threads":"x"}}"#.utf8))
        #expect(odd.chainEvents(shard: 0).isEmpty)
        #expect(odd.sequence == 11)
        let empty = try GatewayFrame.decode(Data(#"{"op":0,"s":12,"t":"GUILD_CREATE","d":{"id":"8","unavailable":true}}"#.utf8))
        #expect(empty.chainEvents(shard: 0).isEmpty)
        let channel = try GatewayFrame.decode(Data(#"{"op":0,"s":13,"t":"CHANNEL_UPDATE","d":{"id":"6","type":0,"guild_id":"8","nsfw":false}}"#.utf8))
        #expect(channel.chainEvents(shard: 0).map(\.ageRestricted) == [[false]])
        // A record whose threads and channels do not match is refused.
        var fields = Dictionary(uniqueKeysWithValues: listed.fields)
        fields["parents"] = Array("7".utf8)
        #expect(throws: ChainEvent.DecodingError.self) { try ChainEvent(fields: fields) }
    }

    @Test func malformedFramesThrow() {
        for bad in ["", "{", "[]", #"{"op":"x"}"#, #"{"op":0,"s":1,"t":"MESSAGE_CREATE","d":{"id":5}}"#, "\u{0}"] {
            #expect(throws: (any Error).self) { try GatewayFrame.decode(Data(bad.utf8)) }
        }
    }
}

@Suite struct SendBudgetAndShardTests {
    @Test func budgetAllowsTheLimitThenWaitsForTheOldestToLeaveTheWindow() {
        var budget = SendBudget(limit: 3, window: .seconds(60))
        let start = ContinuousClock.now
        #expect(budget.reserve(at: start) == .zero)
        #expect(budget.reserve(at: start + .seconds(1)) == .zero)
        #expect(budget.reserve(at: start + .seconds(2)) == .zero)
        #expect(budget.reserve(at: start + .seconds(3)) == .seconds(57))
        #expect(budget.reserve(at: start + .seconds(60)) == .zero)
    }

    @Test func shardSelections() throws {
        #expect(try ShardSelection.parse("0-3") == [0, 1, 2, 3])
        #expect(try ShardSelection.parse("5") == [5])
        #expect(try ShardSelection.parse("0,2,4-6,2") == [0, 2, 4, 5, 6])
        for bad in ["", "a", "3-1", "-1", "1-2-3"] {
            #expect(throws: ShardSelectionError.self) { try ShardSelection.parse(bad) }
        }
        #expect(try ShardSelection.forPod(hostname: "gateway-2", perPod: 4) == [8, 9, 10, 11])
        #expect(throws: ShardSelectionError.self) { try ShardSelection.forPod(hostname: "gateway", perPod: 4) }
    }

    @Test func guildShardAndIdentifyBucket() {
        // (guild_id >> 22) % count, as Discord documents.
        #expect(ShardID.shard(of: Snowflake("41771983423143937")!, count: 16) == Int((41_771_983_423_143_937 >> 22) % 16))
        #expect(ShardID(id: 5, count: 16).bucket(maxConcurrency: 4) == 1)
        #expect(ShardID(id: 5, count: 16).bucket(maxConcurrency: 1) == 0)
    }

    @Test func closeCodeTable() {
        #expect(GatewayCloseAction(closeCode: nil) == .resume)
        #expect(GatewayCloseAction(closeCode: 4008) == .resume)
        #expect(GatewayCloseAction(closeCode: 4009) == .identify)
        if case .fatal = GatewayCloseAction(closeCode: 4004) {} else { Issue.record("4004 not fatal") }
    }
}
