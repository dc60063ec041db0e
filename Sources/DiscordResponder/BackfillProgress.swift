import MarkovCore

/// How far a backfill has come, and the text of its progress message (pure).
///
/// Discord does not say how many messages a channel holds, so progress is measured in time: a channel read from
/// its newest message back to the oldest is as far along as the oldest message read is between the newest and
/// the channel's creation (its id's timestamp). Each channel and thread weighs the same.
public struct BackfillProgress: Sendable, Hashable {
    public var items: Int
    public var channels: Int
    public var doneItems: Int
    public var messages: Int
    /// The fraction of the item being read (0…1).
    public var itemFraction: Double

    public init(job: BackfillStore.Job) {
        self.items = job.items
        self.channels = job.channels
        self.doneItems = job.doneItems
        self.messages = job.messages
        self.itemFraction = Self.fraction(item: job.current, newest: job.newest, cursor: job.cursor)
    }

    /// How far reading one item has come: where the cursor's time lies between its newest message and its creation.
    public static func fraction(item: String?, newest: String?, cursor: String?) -> Double {
        guard let item = item.flatMap({ Snowflake($0) }), let newest = newest.flatMap({ Snowflake($0) }),
              let cursor = cursor.flatMap({ Snowflake($0) })
        else { return 0 }
        let span = Double(newest.timestamp - item.timestamp)
        guard span > 0 else { return 1 }
        return min(1, max(0, Double(newest.timestamp - cursor.timestamp) / span))
    }

    /// The whole backfill's fraction (0…1).
    public var fraction: Double {
        guard self.items > 0 else { return 0 }
        return min(1, (Double(self.doneItems) + self.itemFraction) / Double(self.items))
    }

    /// The time left, from how fast the fraction grew since `start` over `elapsed` seconds; nil until it grew.
    public func secondsLeft(since start: BackfillProgress, elapsed: Double) -> Double? {
        let gained = self.fraction - start.fraction
        guard gained > 0.000_1, elapsed > 0 else { return nil }
        return elapsed * (1 - self.fraction) / gained
    }

    /// The progress message: messages read, where it is, speed and time left.
    public func text(rate: Double, secondsLeft: Double?) -> String {
        var text = "📚 Learning this server's history: \(Self.grouped(self.messages)) messages read"
        if self.items > 0 {
            text += " · \(min(self.items, self.doneItems + 1)) of \(self.items) channels and threads"
            text += " · \(Int((self.fraction * 100).rounded(.down))) %"
        }
        text += " · \(Self.grouped(Int(rate.rounded()))) messages/s"
        if let secondsLeft { text += " · about \(Self.duration(secondsLeft)) left" }
        return text
    }

    /// The final report.
    public static func report(job: BackfillStore.Job, seconds: Double) -> String {
        switch job.status {
        case .done:
            let threads = max(0, job.items - job.channels)
            var text = "✅ Read this server's history: \(Self.grouped(job.messages)) messages from \(job.channels) "
                + "channel\(job.channels == 1 ? "" : "s") and \(threads) thread\(threads == 1 ? "" : "s") in \(Self.duration(seconds)); "
                + "I learn from them as they are applied (bots' messages and commands are left out)."
            if !job.skipped.isEmpty {
                text += " I may not read \(job.skipped.prefix(20).map { "<#\($0)>" }.joined(separator: ", "))"
                    + "\(job.skipped.count > 20 ? " and \(job.skipped.count - 20) more" : "") (Read Message History is missing)."
            }
            return text
        case .cancelled:
            return "⏹️ Stopped reading this server's history after \(Self.grouped(job.messages)) messages."
        case .failed:
            return "❌ Reading this server's history failed after \(Self.grouped(job.messages)) messages: \(job.error ?? "unknown error")."
        case .listing, .running:
            return "📚 Still reading this server's history."
        }
    }

    /// `12,345`.
    static func grouped(_ value: Int) -> String {
        let digits = String(abs(value))
        var result = ""
        for (index, character) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { result += "," }
            result.append(character)
        }
        return value < 0 ? "-" + result : result
    }

    /// `45 s`, `3 min`, `2 h 05 min`.
    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds.rounded())
        if total < 90 { return "\(max(0, total)) s" }
        if total < 3600 { return "\(Int((Double(total) / 60).rounded())) min" }
        let minutes = (total % 3600) / 60
        return "\(total / 3600) h \(minutes < 10 ? "0" : "")\(minutes) min"
    }
}
