import DiscordResponder
import MarkovCore
import Testing

@Suite("Backfill progress") struct BackfillProgressTests {
    /// An id made `days` days after the Discord epoch.
    static func id(days: Int64) -> String { Snowflake(timestamp: Snowflake.discordEpoch + days * 86_400_000).rawValue }

    @Test("a channel's fraction is where the cursor's time lies between its newest message and its creation")
    func itemFraction() {
        let item = Self.id(days: 100), newest = Self.id(days: 200)
        #expect(BackfillProgress.fraction(item: item, newest: newest, cursor: Self.id(days: 150)) == 0.5)
        #expect(BackfillProgress.fraction(item: item, newest: newest, cursor: Self.id(days: 200)) == 0)
        #expect(BackfillProgress.fraction(item: item, newest: newest, cursor: Self.id(days: 50)) == 1, "clamped")
        #expect(BackfillProgress.fraction(item: item, newest: nil, cursor: nil) == 0, "nothing read yet")
        #expect(BackfillProgress.fraction(item: "not an id", newest: newest, cursor: newest) == 0)
    }

    @Test("the whole fraction weighs channels equally; the time left follows the speed since the start; the text says it all")
    func wholeAndText() {
        var job = BackfillStore.Job(status: .running, started: 0)
        job.items = 4
        job.channels = 2
        job.doneItems = 1
        job.messages = 12_345
        job.current = Self.id(days: 100)
        job.newest = Self.id(days: 200)
        job.cursor = Self.id(days: 150)
        let progress = BackfillProgress(job: job)
        #expect(progress.fraction == 0.375)
        var start = job
        start.doneItems = 0
        start.current = nil
        let begun = BackfillProgress(job: start)
        // 0.375 done in 30 s: 0.625 left takes 50 s.
        #expect(progress.secondsLeft(since: begun, elapsed: 30) == 50)
        #expect(progress.secondsLeft(since: progress, elapsed: 30) == nil, "no progress yet, no guess")
        let text = progress.text(rate: 850.4, secondsLeft: 130)
        #expect(text.contains("12,345 messages read"))
        #expect(text.contains("2 of 4 channels and threads"))
        #expect(text.contains("37 %"))
        #expect(text.contains("850 messages/s"))
        #expect(text.contains("about 2 min left"))
    }

    @Test("the report names what was read and what could not be")
    func report() {
        var job = BackfillStore.Job(status: .done, started: 0)
        job.items = 5
        job.channels = 2
        job.messages = 1_000_000
        job.skipped = ["123"]
        let text = BackfillProgress.report(job: job, seconds: 7_500)
        #expect(text.contains("1,000,000 messages from 2 channels and 3 threads in 2 h 05 min"))
        #expect(text.contains("<#123>"))
        job.status = .failed
        job.error = "Discord refused the token (401)"
        #expect(BackfillProgress.report(job: job, seconds: 1).contains("401"))
    }
}
