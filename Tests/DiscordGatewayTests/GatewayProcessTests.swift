import DiscordGateway
import DiscordProtocol
import FakeDiscord
import Foundation
import MarkovChains
import MarkovCore
import DiscordREST
import Redis
import Synchronization
import Testing

extension GatewayIntegrationTests {
    /// `markov gateway` and `markov trainer` as real processes against the fake.
    @Suite("Gateway processes") struct GatewayProcessTests {
        static let shardCount = 4
        static let messagesPerShard = 25_000

        /// The `markov` executable built beside the tests.
        static var executable: URL? {
            let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            for candidate in [directory, directory.deletingLastPathComponent()] {
                let url = candidate.appendingPathComponent("markov")
                if FileManager.default.isExecutableFile(atPath: url.path) { return url }
            }
            return nil
        }

        static func start(
            _ arguments: [String], fake: FakeDiscord, environment extra: [String: String] = [:], standardError: Any? = nil,
            standardOutput: Any? = nil
        ) throws -> Process {
            let process = Process()
            process.executableURL = try #require(Self.executable, "the markov executable must be built beside the tests")
            process.arguments = arguments
            var environment = ProcessInfo.processInfo.environment
            environment["REDIS_URL"] = GatewayHarness.redisURL
            environment["MARKOV_PARTITIONS"] = "\(GatewayHarness.partitions)"
            environment["DISCORD_TOKEN"] = fake.configuration.token
            environment["DISCORD_API_URL"] = fake.apiURL
            environment["LOG_LEVEL"] = GatewayHarness.environment["MARKOV_TEST_LOG"] ?? "error"
            environment["MARKOV_HTTP_PORT"] = "0"  // any free port: several processes run side by side
            environment.merge(extra) { $1 }
            // An empty value removes the variable (`markov up` without REDIS_URL starts its own Redis).
            process.environment = environment.filter { !$0.value.isEmpty }
            process.standardOutput = standardOutput ?? FileHandle.nullDevice
            if let standardError { process.standardError = standardError }
            try process.run()
            return process
        }

        static func gateway(shards: String, fake: FakeDiscord) throws -> Process {
            try Self.start(
                ["gateway", "--shards", shards, "--shard-count", "\(Self.shardCount)", "--identify-interval-ms", "300"],
                fake: fake
            )
        }

        /// Three words per message, from small vocabularies, so every state has several successors.
        static func content(_ index: Int) -> String { "a\(index % 7) b\(index % 11) c\(index % 13)" }

        /// A port nothing listens on now.
        static func freePort() throws -> Int {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            try withUnsafeMutablePointer(to: &address) { pointer in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    guard bind(fd, socketAddress, length) == 0, getsockname(fd, socketAddress, &length) == 0 else {
                        throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EADDRNOTAVAIL)
                    }
                }
            }
            return Int(UInt16(bigEndian: address.sin_port))
        }

        /// GET on a role's HTTP port: status and body.
        static func get(_ port: Int, _ path: String) async -> (Int, String)? {
            guard let response = try? await CurlHTTPClient().perform(HTTPRequest(method: "GET", url: "http://127.0.0.1:\(port)\(path)", timeout: .seconds(5)))
            else { return nil }
            return (response.status, String(decoding: response.body, as: UTF8.self))
        }

        /// Asks every query of monitoring/dashboard.json of a real Prometheus that scrapes the roles (Debian's
        /// `prometheus`, installed by make test; skipped with a note where it is missing): each must return data,
        /// but for Redis's own metrics (redis_exporter, not run here) and Redis errors (a series per kind of
        /// failure, made by the first one).
        static func checkDashboard(jobs: [(name: String, port: Int)]) async throws {
            guard let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first(where: FileManager.default.isExecutableFile)
            else {
                print("note: prometheus is not installed; the dashboard's queries were not run")
                return
            }
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("markov-prometheus-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            var config = "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
            for job in jobs {
                config += "  - job_name: \(job.name)\n    static_configs: [{targets: [\"127.0.0.1:\(job.port)\"]}]\n"
            }
            try config.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
            let port = try Self.freePort()
            let prometheus = Process()
            prometheus.executableURL = URL(fileURLWithPath: binary)
            prometheus.arguments = [
                "--config.file=\(directory.path)/prometheus.yml", "--storage.tsdb.path=\(directory.path)/data",
                "--web.listen-address=127.0.0.1:\(port)",
            ]
            prometheus.standardOutput = FileHandle.nullDevice
            prometheus.standardError = FileHandle.nullDevice
            try prometheus.run()
            defer {
                prometheus.terminate()
                prometheus.waitUntilExit()
            }
            func query(_ expression: String) async -> [Any]? {
                var components = URLComponents(string: "http://127.0.0.1:\(port)/api/v1/query")!
                components.queryItems = [URLQueryItem(name: "query", value: expression)]
                // `+` stays literal in a query string; Prometheus would read it as a space.
                let path = components.url!.absoluteString.replacingOccurrences(of: "+", with: "%2B")
                guard let response = try? await CurlHTTPClient().perform(HTTPRequest(method: "GET", url: path, timeout: .seconds(5))),
                      response.status == 200,
                      let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                      let data = object["data"] as? [String: Any]
                else { return nil }
                return data["result"] as? [Any]
            }
            try await GatewayHarness.eventually("Prometheus to scrape the roles", timeout: .seconds(60)) {
                (await query("count(up == 1)")?.first as? [String: Any]).flatMap { ($0["value"] as? [Any])?.last as? String } == "\(jobs.count)"
            }
            // Rates need two samples in their window.
            try await Task.sleep(for: .seconds(4))
            let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("monitoring/dashboard.json")
            let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
            var asked = 0
            var empty: [String] = []
            for panel in dashboard["panels"] as? [[String: Any]] ?? [] {
                for target in panel["targets"] as? [[String: Any]] ?? [] {
                    guard let expression = target["expr"] as? String else { continue }
                    if expression.contains("redis_") { continue }
                    let resolved = expression.replacingOccurrences(of: "$__rate_interval", with: "30s").replacingOccurrences(of: "$job", with: "markov.*")
                    asked += 1
                    if await query(resolved)?.isEmpty != false { empty.append("\(panel["title"] ?? ""): \(expression)") }
                }
            }
            #expect(asked >= 20, "the dashboard's queries were read")
            #expect(empty == [], "dashboard queries without data")
        }

        @Test("each role serves /health, /ready and /metrics; logs are JSON lines when asked; the token appears in no log line")
        func observability() async throws {
            let harness = try await GatewayHarness()
            defer { harness.redis.shutdown() }
            let fake = try await GatewayHarness.fake(shards: 1)
            let ports = try (0..<3).map { _ in try Self.freePort() }
            let logs = (0..<3).map { _ in Pipe() }
            let collected = Mutex([Data(), Data(), Data()])
            for (index, pipe) in logs.enumerated() {
                pipe.fileHandleForReading.readabilityHandler = { handle in
                    let chunk = handle.availableData
                    collected.withLock { $0[index].append(chunk) }
                }
            }
            defer { for pipe in logs { pipe.fileHandleForReading.readabilityHandler = nil } }
            let roles = [["gateway", "--shard-count", "1"], ["trainer"], ["responder"]]
            var processes: [Process] = []
            for (index, arguments) in roles.enumerated() {
                processes.append(try Self.start(
                    arguments, fake: fake,
                    environment: ["MARKOV_HTTP_PORT": "\(ports[index])", "LOG_FORMAT": "json", "LOG_LEVEL": "debug"],
                    standardError: logs[index]
                ))
            }
            defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            for (index, port) in ports.enumerated() {
                try await GatewayHarness.eventually("\(roles[index][0]) to be ready", timeout: .seconds(60)) {
                    await Self.get(port, "/ready")?.0 == 200
                }
                #expect(await Self.get(port, "/health")?.0 == 200)
            }
            let ready = await Self.get(ports[0], "/ready")
            #expect(ready?.1.contains("shards 1/1 ok") == true, "\(ready?.1 ?? "")")
            #expect(ready?.1.contains("redis ok") == true)
            // What a container platform runs: `markov probe` exits 0 for a ready role, 1 where nothing answers.
            func probe(_ url: String) throws -> Int32 {
                let process = try Self.start(["probe", url], fake: fake)
                process.waitUntilExit()
                return process.terminationStatus
            }
            for port in ports {
                #expect(try probe("http://127.0.0.1:\(port)/ready") == 0)
                #expect(await Self.get(port, "/metrics")?.1.contains("markov_ready 1") == true, "readiness is a metric too")
            }
            #expect(try probe("http://127.0.0.1:\(try Self.freePort())/ready") == 1)
            // Something to count: a message (learnt by nobody: the channel is not enabled) and a trigger.
            let guild = GatewayHarness.guild(onShard: 0, of: 1)
            let now = (UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000) << 22
            try fake.dispatch(shard: 0, event: "MESSAGE_CREATE", json: FakeDiscord.messageJSON(id: now, channel: 7, guild: guild, author: 9, content: "!mark"))
            try await GatewayHarness.eventually("the reply") { fake.rest.messageCount == 1 }
            try await GatewayHarness.eventually("the metrics") {
                let gateway = await Self.get(ports[0], "/metrics")?.1 ?? ""
                let trainer = await Self.get(ports[1], "/metrics")?.1 ?? ""
                let responder = await Self.get(ports[2], "/metrics")?.1 ?? ""
                return gateway.contains("markov_gateway_dispatches_total") && gateway.contains("markov_gateway_events_appended_total")
                    && trainer.contains("markov_trainer_batches_total") && trainer.contains("markov_stream_lag")
                    && responder.contains("markov_responder_replies_total") && responder.contains("markov_reply_latency_seconds")
                    && responder.contains("markov_rest_requests_total")
            }
            try await Self.checkDashboard(jobs: [("markov-gateway", ports[0]), ("markov-trainer", ports[1]), ("markov-responder", ports[2])])
            for process in processes { kill(process.processIdentifier, SIGTERM) }
            for process in processes { process.waitUntilExit() }
            try await Task.sleep(for: .milliseconds(200))
            for (index, data) in collected.withLock({ $0 }).enumerated() {
                let text = String(decoding: data, as: UTF8.self)
                let lines = text.split(separator: "\n")
                #expect(!lines.isEmpty, "\(roles[index][0]) logged nothing")
                for line in lines {
                    let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                    #expect(object?["level"] != nil && object?["message"] != nil, "not a JSON log line: \(line)")
                }
                #expect(!text.contains(fake.configuration.token), "the token leaked into \(roles[index][0])'s log")
                #expect(text.contains("127.0.0.1:\(ports[index])"), "\(roles[index][0]) serves on the loopback address by default")
            }
            // An address that cannot be listened on is refused with the setting's name.
            let refused = Pipe()
            let bad = try Self.start(["trainer"], fake: fake, environment: ["MARKOV_HTTP_HOST": "not an/address"], standardError: refused)
            bad.waitUntilExit()
            #expect(bad.terminationStatus != 0)
            #expect(String(decoding: refused.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("MARKOV_HTTP_HOST"))
            await fake.stop()
        }

        @Test("markov up with DISCORD_TOKEN is the whole bot in one process on its own Redis: /listen, learning, !mark; SIGTERM stops it and its Redis")
        func upWithToken() async throws {
            let fake = try await GatewayHarness.fake(shards: 1)
            let data = FileManager.default.temporaryDirectory.appendingPathComponent("markov-up-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: data) }
            let output = Pipe()
            let printed = Mutex(Data())
            output.fileHandleForReading.readabilityHandler = { handle in
                let chunk = handle.availableData
                printed.withLock { $0.append(chunk) }
            }
            defer { output.fileHandleForReading.readabilityHandler = nil }
            let up = try Self.start(
                ["up", "--data", data.path, "--web-port", "0"], fake: fake, environment: ["REDIS_URL": "", "REDIS_CLUSTER_NODES": ""],
                standardOutput: output
            )
            defer { if up.isRunning { kill(up.processIdentifier, SIGKILL) } }
            try await fake.waitForShards([0], timeout: .seconds(60))
            let guild = GatewayHarness.guild(onShard: 0, of: 1, salt: 31)
            let now = (UInt64(Date().timeIntervalSince1970 * 1000) - 1_420_070_400_000) << 22
            _ = try fake.dispatchInteraction(
                shard: 0, id: now, guild: guild, channel: 7, user: 9, name: "listen",
                options: #"[{"name":"add","type":1,"options":[{"name":"channel","type":7,"value":"7"}]}]"#, permissions: "8"
            )
            try await GatewayHarness.eventually("the /listen answer", timeout: .seconds(30)) {
                fake.rest.requests.contains { $0.path.hasSuffix("/callback") }
            }
            for (index, text) in ["llamas dance at dawn", "llamas dance at noon"].enumerated() {
                try fake.dispatch(shard: 0, event: "MESSAGE_CREATE", json: FakeDiscord.messageJSON(
                    id: now + 1 + UInt64(index), channel: 7, guild: guild, author: 9, content: text
                ))
            }
            // Wait for the lines to be learnt: `!mark llamas` answers with them once they are.
            var attempt: UInt64 = 10
            try await GatewayHarness.eventually("a sentence about llamas", timeout: .seconds(60)) {
                attempt += 1
                try fake.dispatch(shard: 0, event: "MESSAGE_CREATE", json: FakeDiscord.messageJSON(
                    id: now + attempt, channel: 7, guild: guild, author: 9, content: "!mark llamas"
                ))
                try await Task.sleep(for: .milliseconds(500))
                return fake.rest.messages.contains { $0.content.hasPrefix("llamas dance at") }
            }
            // The web console's System view shows the shard and the rate-limit buckets the replies used.
            let url = try #require(
                String(decoding: printed.withLock { $0 }, as: UTF8.self).split(separator: "\n")
                    .first { $0.hasPrefix("web console: ") }?.dropFirst("web console: ".count),
                "markov up printed its web console's URL"
            )
            let response = try await CurlHTTPClient().perform(HTTPRequest(method: "GET", url: url + "api/system"))
            #expect(response.status == 200)
            let system = try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
            let metrics = try #require(system["metrics"] as? [String: Any])
            #expect(metrics["shardsHeld"] as? [Int] == [0], "\(metrics)")
            let limits = try #require(system["rateLimits"] as? [String: Any], "\(system)")
            let buckets = try #require(limits["buckets"] as? [[String: Any]])
            #expect(buckets.contains { $0["major"] as? String == "7" }, "the channel's bucket: \(buckets)")
            kill(up.processIdentifier, SIGTERM)
            up.waitUntilExit()
            #expect(up.terminationReason == .exit && up.terminationStatus == 0)
            // Its Redis stopped with it, and kept its data in the append-only file.
            let pidFile = data.appendingPathComponent("redis.pid").path
            if let pid = try? String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
               let number = Int32(pid) {
                #expect(kill(number, 0) != 0, "the private redis-server is still running")
            }
            let files = (try? FileManager.default.subpathsOfDirectory(atPath: data.path)) ?? []
            #expect(files.contains { $0.contains("appendonly") }, "no append-only file in \(files)")
            await fake.stop()
        }

        @Test("a Redis password appears in no log line or error: refused by the server, or the server unreachable")
        func redisPasswordStaysSecret() async throws {
            let fake = try await GatewayHarness.fake(shards: 1)
            let secret = "Sup3r-Secret-Pw"
            let server = URL(string: GatewayHarness.redisURL)!
            // The test server has no password (AUTH is refused), and nothing listens on port 1 (connecting fails).
            let urls = ["redis://:\(secret)@\(server.host!):\(server.port!)/3", "redis://user:\(secret)@127.0.0.1:1/0"]
            for url in urls {
                for arguments in [["trainer"], ["generate", "--guild", "1"], ["inspect", "--guild", "1"]] {
                    let pipe = Pipe()
                    let process = try Self.start(
                        arguments, fake: fake, environment: ["REDIS_URL": url, "LOG_LEVEL": "trace"], standardError: pipe
                    )
                    let deadline = ContinuousClock.now + .seconds(5)
                    while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
                    if process.isRunning { kill(process.processIdentifier, SIGTERM) }
                    process.waitUntilExit()
                    let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    #expect(!text.isEmpty, "\(arguments[0]) said nothing about the failure")
                    #expect(!text.contains(secret), "the password leaked from \(arguments[0]): \(text.prefix(500))")
                }
            }
            await fake.stop()
        }

        /// The holder of each shard lease (`gateways:lease:{n}`), by process name.
        static func holders(_ harness: GatewayHarness, shards: Int) async throws -> [Int: String] {
            var holders: [Int: String] = [:]
            for shard in 0..<shards {
                if let value = try await harness.redis.send(RedisCommand("GET", .string("gateways:lease:{\(shard)}"))).string {
                    holders[shard] = String(value.split(separator: " ")[0])
                }
            }
            return holders
        }

        /// Every message id in the live streams, with how many entries carry it.
        static func messageIDs(_ harness: GatewayHarness) async throws -> [String: Int] {
            var ids: [String: Int] = [:]
            for partition in 0..<GatewayHarness.partitions {
                let entries = try await harness.redis.send(RedisCommand("XRANGE", .string(harness.log.keys.stream(partition)), "-", "+")).array ?? []
                for entry in entries {
                    let fields = entry.array?[1].array ?? []
                    for index in stride(from: 0, to: fields.count - 1, by: 2) where fields[index].string == "id" {
                        ids[fields[index + 1].string ?? "", default: 0] += 1
                    }
                }
            }
            return ids
        }

        @Test("three leased gateway processes share 16 shards; a SIGKILLed one's shards are resumed elsewhere, a new one takes its share, a SIGSTOPped one past its lease lets go when it wakes: never two sessions of a shard, no identify after the first, every message in the log")
        func leasedGateways() async throws {
            let harness = try await GatewayHarness()
            defer { harness.redis.shutdown() }
            let shardCount = 16
            let fake = try await GatewayHarness.fake(shards: shardCount) { $0.heartbeatInterval = 1_000 }
            let arguments = ["gateway", "--shard-count", "\(shardCount)", "--identify-interval-ms", "300", "--lease-ttl", "3"]
            var processes = try (0..<3).map { _ in try Self.start(arguments, fake: fake) }
            defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
            try await fake.waitForShards(0..<shardCount)
            try await GatewayHarness.eventually("three processes sharing the shards", timeout: .seconds(30)) {
                let counts = Dictionary(grouping: try await Self.holders(harness, shards: shardCount).values, by: { $0 }).mapValues(\.count)
                return counts.count == 3 && counts.values.allSatisfy { (5...6).contains($0) }
            }
            #expect(fake.identifies.count == shardCount, "one identify per shard: \(fake.identifies.map(\.shard))")

            var sent: [String] = []
            var next = 0
            func flood(_ perShard: Int) throws {
                for shard in 0..<shardCount {
                    let guild = GatewayHarness.guild(onShard: shard, of: shardCount)
                    for _ in 0..<perShard {
                        let id = GatewayTests.messageBase + 50_000_000 + UInt64(next)
                        next += 1
                        try fake.dispatch(shard: shard, event: "MESSAGE_CREATE",
                                          json: FakeDiscord.messageJSON(id: id, channel: 7, guild: guild, author: 9, content: "leased \(next)"))
                        sent.append(String(id))
                    }
                }
            }
            try flood(20)

            // SIGKILL one: its shards are resumed by the others after the lease expires.
            let victim = processes.removeFirst()
            let before = try await Self.holders(harness, shards: shardCount)
            kill(victim.processIdentifier, SIGKILL)
            victim.waitUntilExit()
            let killedAt = ContinuousClock.now
            try flood(20)
            var takeover: [Double] = []
            var orphaned = Set(before.filter { $0.value.contains("-\(victim.processIdentifier)-") }.keys)
            #expect(!orphaned.isEmpty)
            let resumesBefore = fake.resumes.count
            try await GatewayHarness.eventually("the killed process's shards resumed elsewhere", timeout: .seconds(30)) {
                for (shard, at) in fake.resumes.dropFirst(resumesBefore) where orphaned.contains(shard) {
                    let elapsed = at - killedAt
                    takeover.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
                    orphaned.remove(shard)
                }
                return orphaned.isEmpty
            }
            takeover.sort()
            print("leased gateways: death to resumed shard, \(takeover.count) shards: p50 \(takeover[takeover.count / 2]) s, max \(takeover.last ?? 0) s (lease TTL 3 s)")
            try await fake.waitForShards(0..<shardCount)

            // A new process takes its share.
            processes.append(try Self.start(arguments, fake: fake))
            try await GatewayHarness.eventually("three processes sharing the shards again", timeout: .seconds(30)) {
                let counts = Dictionary(grouping: try await Self.holders(harness, shards: shardCount).values, by: { $0 }).mapValues(\.count)
                return counts.count == 3 && counts.values.allSatisfy { (5...6).contains($0) } && fake.connectedShards.count == shardCount
            }
            try flood(20)

            // SIGSTOP one past its lease: the others take its shards; woken, it checkpoints nothing and lets go.
            let paused = processes[0]
            kill(paused.processIdentifier, SIGSTOP)
            try await GatewayHarness.eventually("the paused process's shards taken over", timeout: .seconds(30)) {
                let holders = try await Self.holders(harness, shards: shardCount)
                return holders.count == shardCount && !holders.values.contains { $0.contains("-\(paused.processIdentifier)-") }
            }
            try flood(20)
            kill(paused.processIdentifier, SIGCONT)
            try await Task.sleep(for: .seconds(3))
            try flood(20)
            try await fake.waitForShards(0..<shardCount)

            try await GatewayHarness.eventually("every message in the log", timeout: .seconds(60)) {
                Set(try await Self.messageIDs(harness).keys).isSuperset(of: sent)
            }
            #expect(fake.identifies.count == shardCount, "every takeover and handover resumed; none identified: \(fake.identifies.map(\.shard))")
            #expect(fake.violations.isEmpty, "\(fake.violations)")
            for process in processes { kill(process.processIdentifier, SIGTERM) }
            for process in processes {
                process.waitUntilExit()
                #expect(process.terminationReason == .exit && process.terminationStatus == 0, "SIGTERM ends each gateway cleanly")
            }
            #expect(try await Self.holders(harness, shards: shardCount).isEmpty, "leases given back at shutdown")
            await fake.stop()
        }

        @Test("a static gateway whose shard a leased one holds waits and never holds it twice; --shard-count auto agrees through Redis")
        func staticWaitsForLease() async throws {
            let harness = try await GatewayHarness()
            defer { harness.redis.shutdown() }
            // The first gateway to start fixes the count for the others.
            #expect(try await harness.store.agreedShardCount(discovered: 2) == 2)
            #expect(try await harness.store.agreedShardCount(discovered: 5) == 2, "a later recommendation does not change it")
            try await harness.redis.send(RedisCommand("DEL", .string(GatewayStore.shardCountKey)))

            let fake = try await GatewayHarness.fake(shards: 2)
            let leased = try Self.start(["gateway", "--shard-count", "2", "--identify-interval-ms", "300", "--lease-ttl", "3"], fake: fake)
            defer { if leased.isRunning { kill(leased.processIdentifier, SIGKILL) } }
            try await fake.waitForShards(0..<2)
            let log = Pipe()
            let collected = Mutex(Data())
            log.fileHandleForReading.readabilityHandler = { handle in
                let chunk = handle.availableData
                collected.withLock { $0.append(chunk) }
            }
            let waiting = try Self.start(["gateway", "--shards", "1", "--shard-count", "2", "--identify-interval-ms", "300"], fake: fake,
                                         environment: ["LOG_LEVEL": "notice"], standardError: log)
            defer { if waiting.isRunning { kill(waiting.processIdentifier, SIGKILL) } }
            try await GatewayHarness.eventually("the static gateway to say it waits", timeout: .seconds(20)) {
                String(decoding: collected.withLock { $0 }, as: UTF8.self).contains("the shard is held by another process")
            }
            try await Task.sleep(for: .seconds(2))
            #expect(fake.identifies.count == 2, "the waiting gateway did not connect shard 1")
            // The leased one stops: the static one takes shard 1 when it is released, resuming its session.
            kill(leased.processIdentifier, SIGTERM)
            leased.waitUntilExit()
            try await GatewayHarness.eventually("the static gateway to hold shard 1", timeout: .seconds(20)) {
                try await Self.holders(harness, shards: 2)[1]?.contains("-\(waiting.processIdentifier)-") == true
                    && fake.connectedShards.contains(1)
            }
            #expect(fake.identifies.count == 2, "shard 1 was resumed, not identified")
            #expect(fake.violations.isEmpty, "\(fake.violations)")
            kill(waiting.processIdentifier, SIGTERM)
            waiting.waitUntilExit()
            log.fileHandleForReading.readabilityHandler = nil
            await fake.stop()
        }

        @Test("100k messages through 4 shards in 2 gateway processes, with reconnects, op 9, zombies and a SIGKILL: every message reaches the streams and the trainer's counts equal the flood's")
        func floodWithFaults() async throws {
            let harness = try await GatewayHarness()
            defer { harness.redis.shutdown() }
            // Heartbeats every 1.5 s: under this flood a debug-build gateway can take longer than the 250 ms of the
            // other tests to read its way to an ACK, and would call a healthy connection a zombie.
            let fake = try await GatewayHarness.fake(shards: Self.shardCount) { $0.heartbeatInterval = 1_500 }
            let store = ChainStore(redis: harness.redis, stateSize: 2)
            try await store.prepare()
            try await harness.log.ensureGroup("trainers")
            let guilds = (0..<Self.shardCount).map { Snowflake(String(GatewayHarness.guild(onShard: $0, of: Self.shardCount)))! }
            // Gateway messages train only in channels enabled for learning.
            for guild in guilds { try await store.setListening(true, channel: Snowflake("7")!, guild: guild) }

            var first = try Self.gateway(shards: "0-1", fake: fake)
            let second = try Self.gateway(shards: "2-3", fake: fake)
            let trainer = try Self.start(["trainer", "--batch-size", "256"], fake: fake)
            defer {
                for process in [first, second, trainer] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
            try await fake.waitForShards(0..<Self.shardCount)
            #expect(fake.identifies.count == Self.shardCount)

            let chunk = 2_500
            var sent = 0
            var killed = false
            for round in 0..<(Self.messagesPerShard / chunk) {
                for shard in 0..<Self.shardCount {
                    let guild = GatewayHarness.guild(onShard: shard, of: Self.shardCount)
                    for index in (round * chunk)..<((round + 1) * chunk) {
                        let id = GatewayTests.messageBase + UInt64(shard) * 10_000_000 + UInt64(index)
                        try fake.dispatch(
                            shard: shard, event: "MESSAGE_CREATE",
                            json: FakeDiscord.messageJSON(id: id, channel: 7, guild: guild, author: 9, content: Self.content(index))
                        )
                        sent += 1
                    }
                }
                switch round {
                case 1: fake.reconnect(shard: 0)
                case 2: fake.invalidateSession(shard: 1, resumable: true)
                case 3: fake.dropHeartbeatACKs(shard: 2, true)
                case 4: fake.dropConnection(shard: 3)
                case 5:
                    fake.dropHeartbeatACKs(shard: 2, false)
                    // SIGKILL the process holding shards 0 and 1 mid-flood; its successor resumes their sessions.
                    kill(first.processIdentifier, SIGKILL)
                    first.waitUntilExit()
                    killed = true
                case 7:
                    first = try Self.gateway(shards: "0-1", fake: fake)
                case 8: fake.close(shard: 2, code: 4000)
                default: break
                }
                // Let the gateways keep up a little between rounds.
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(killed)
            #expect(sent == Self.shardCount * Self.messagesPerShard)

            // Every message reaches the streams (a replay after a resume may add duplicates, never gaps). The
            // trainer trims what it consumed, so the streams are measured by entries ever added, and completeness
            // by the trainer's per-guild message counts below (it applies each message id once).
            try await GatewayHarness.eventually("the flood to reach the streams", timeout: .seconds(240)) {
                try await harness.entriesAdded() >= sent
            }
            #expect(fake.identifies.count == Self.shardCount, "every fault was resumed, none re-identified")
            #expect(fake.violations.isEmpty)

            // The trainer applied each message once: its counts equal an independent count of the flood.
            let deadline = ContinuousClock.now + .seconds(300)
            while try await harness.log.backlog(group: "trainers", partitions: 0..<GatewayHarness.partitions) > 0,
                  ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            var expected: [String: Int] = [:]
            for index in 0..<Self.messagesPerShard where index % 7 == 3 && index % 11 == 5 {
                expected["c\(index % 13)", default: 0] += 1
            }
            for guild in guilds {
                let totals = try await store.totals(guild: guild)
                #expect(totals["messages"] == Self.messagesPerShard)
                let table = try await store.state(["a3", "b5"], guild: guild)
                var counts: [String: Int] = [:]
                for (token, count) in table.successors { counts[token] = count }
                #expect(counts == expected)
            }

            for process in [first, second, trainer] { kill(process.processIdentifier, SIGTERM) }
            for process in [first, second, trainer] {
                process.waitUntilExit()
                #expect(process.terminationReason == .exit && process.terminationStatus == 0, "SIGTERM ends each role cleanly")
            }
            // The gateways closed resumably: their sessions stay for a successor.
            for shard in 0..<Self.shardCount { #expect(try await harness.store.session(shard: shard) != nil) }
            #expect(fake.clientCloseCodes.allSatisfy { $0 != 1000 && $0 != 1001 })
            await fake.stop()
        }
    }
}
