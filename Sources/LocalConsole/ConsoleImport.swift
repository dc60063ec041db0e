import Foundation
import MarkovChains
import MarkovCore
import Redis

/// Imports a history file into the console's guild and follows it until the trainer has applied it: the same
/// for `markov up --import` and an import from the web console.
public struct ConsoleImport: Sendable {
    /// How far an import is.
    public struct Progress: Sendable, Hashable, Codable {
        public enum Phase: String, Sendable, Hashable, Codable {
            /// The file is being read and its messages appended to the bulk lane.
            case reading
            /// Everything is appended; the trainer is applying it.
            case applying
            case done
            case failed
        }

        public var phase: Phase = .reading
        /// Bytes of the file read, and its size.
        public var bytesRead = 0
        public var bytes = 0
        /// Events appended to the log, and applied by the trainer.
        public var appended = 0
        public var applied = 0
        /// The file's format once known (`discordChatExporter`, `referenceBot`, `plainText`).
        public var format: String?
        /// Seconds since the import began.
        public var elapsed = 0.0
        /// What went wrong (phase `failed`).
        public var error: String?

        public init() {}

        /// The share done, 0…1: reading counts for the first half when the total is not known yet.
        public var fraction: Double {
            switch self.phase {
            case .done: return 1
            case .reading:
                return self.readFraction
            case .failed where self.appended == 0:
                return self.readFraction
            case .applying, .failed: return self.appended > 0 ? 0.5 + 0.5 * Double(self.applied) / Double(self.appended) : 0.5
            }
        }

        private var readFraction: Double { self.bytes > 0 ? 0.5 * Double(self.bytesRead) / Double(self.bytes) : 0 }

        /// Messages applied per second so far.
        public var rate: Double { self.elapsed > 0 ? Double(self.applied) / self.elapsed : 0 }

        /// Seconds left at the rate so far (nil until there is a rate).
        public var eta: Double? {
            let fraction = self.fraction
            guard fraction > 0, fraction < 1, self.elapsed > 0 else { return self.phase == .done ? 0 : nil }
            return self.elapsed * (1 - fraction) / fraction
        }
    }

    public let log: EventLog
    public let guild: Snowflake
    /// How often progress is reported while the trainer applies.
    public var pollInterval: Duration = .milliseconds(100)

    public init(log: EventLog, guild: Snowflake) {
        self.log = log
        self.guild = guild
    }

    /// Reads `file`, appends its messages to the bulk lane and waits until the trainers have applied them,
    /// reporting progress as it goes (a report that throws stops it). Throws what went wrong (a malformed file, Redis); the events appended
    /// before a failure stay appended and are learnt.
    @discardableResult
    public func run(file: String, progress report: @Sendable (Progress) throws -> Void) async throws -> Progress {
        let clock = ContinuousClock()
        let start = clock.now
        var progress = Progress()
        progress.bytes = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        let log = self.log
        func seconds() -> Double {
            let elapsed = clock.now - start
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
        try report(progress)
        let summary = try await HistoryImporter.read(file: file, guild: self.guild) { events, bytesRead in
            try await log.append(events, lane: .bulk)
            progress.appended += events.count
            progress.bytesRead = bytesRead
            progress.elapsed = seconds()
            try report(progress)
        }
        progress.format = summary.format.rawValue
        progress.bytesRead = progress.bytes
        progress.phase = .applying
        let partition = log.keys.partition(of: self.guild)
        while true {
            let backlog = try await log.backlog(group: "trainers", partitions: [partition], lanes: EventLog.Lane.allCases)
            progress.applied = max(0, progress.appended - backlog)
            progress.elapsed = seconds()
            if backlog == 0 { break }
            try report(progress)
            try await Task.sleep(for: self.pollInterval)
        }
        progress.applied = progress.appended
        progress.phase = .done
        try report(progress)
        return progress
    }
}
