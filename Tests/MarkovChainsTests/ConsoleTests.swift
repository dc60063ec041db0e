import Foundation
import Synchronization
import Testing

@Suite("markov up: console channel on a private Redis", .enabled(if: ChainHarness.isConfigured))
struct ConsoleTests {
    @Test("typed lines are learnt, !mark answers from them, SIGTERM ends it cleanly and stops the private redis-server")
    func console() async throws {
        let executable = try #require(ChainIntegrationTests.TrainerProcessTests.executable, "the markov executable must be built beside the tests")
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("markov-up-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let process = Process()
        process.executableURL = executable
        process.arguments = ["up", "--data", data.path, "--web-port", "0"]
        var environment = ProcessInfo.processInfo.environment
        environment["REDIS_URL"] = nil
        environment["REDIS_CLUSTER_NODES"] = nil
        environment["DISCORD_TOKEN"] = nil
        process.environment = environment
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        let received = Mutex(Data())
        output.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            received.withLock { $0.append(chunk) }
        }
        defer { output.fileHandleForReading.readabilityHandler = nil }
        try process.run()
        let lines = ["zebras enjoy quiet evenings", "zebras enjoy loud mornings", "zebras enjoy quiet mornings"]
        input.fileHandleForWriting.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        try await Task.sleep(for: .seconds(2)) // the trainer applies the lines
        input.fileHandleForWriting.write(Data("!mark\n!mark zebras\n!mark help\n".utf8))
        func text() -> String { received.withLock { String(decoding: $0, as: UTF8.self) } }
        func answers() -> [Substring] { text().split(separator: "\n").filter { $0.hasPrefix("markov> ") } }
        let answered = ContinuousClock.now + .seconds(60)
        while (answers().count < 2 || !text().contains("debug [words]")) && ContinuousClock.now < answered {
            try await Task.sleep(for: .milliseconds(100))
        }
        process.terminate() // SIGTERM: a graceful shutdown
        let deadline = ContinuousClock.now + .seconds(60)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!process.isRunning, "SIGTERM ends markov up")
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        #expect(answers().count == 2, "\(text())")
        for answer in answers() {
            #expect(answer.hasPrefix("markov> zebras enjoy"), "\(answer)")
        }
        let text = text()
        #expect(text.contains("debug [words]"))
        #expect(process.terminationStatus == 0)
        // The private server wrote its data and is gone.
        #expect(FileManager.default.fileExists(atPath: data.appendingPathComponent("appendonlydir").path))
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        check.arguments = ["-f", data.path]
        check.standardOutput = FileHandle.nullDevice
        try check.run()
        check.waitUntilExit()
        #expect(check.terminationStatus != 0, "no redis-server of this test is left running")
    }
}
