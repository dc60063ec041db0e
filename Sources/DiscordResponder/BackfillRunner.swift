import CoreMetrics
import DiscordProtocol
import DiscordREST
import Foundation
import Logging
import MarkovChains
import MarkovCore
import Redis
import ServiceLifecycle
import Synchronization

/// Reads guilds' message history for `/train`: every channel enabled for learning and its threads (active and
/// archived public ones), pages of 100 from newest to oldest, appended to the event log so that the trainers
/// apply each message exactly once (a page read twice after a crash is deduplicated by message id).
///
/// Every responder runs one of these. A backfill lives in Redis (``BackfillStore``); the responder holding its
/// lease reads it page by page, renewing the lease with each page's cursor. When a responder stops gracefully it
/// gives the lease back; when it dies the lease expires. Either way another responder (or the same one, restarted)
/// carries on from the last cursor.
///
/// Progress is edited into a message in the channel where `/train` was used, every few seconds; the final report
/// is a reply to that message (an interaction token would have expired after 15 minutes).
public final class BackfillRunner: Sendable {
    public struct Configuration: Sendable {
        /// This responder's name (the lease holder).
        public var owner: String
        /// Backfills this responder reads at once.
        public var maxJobs = 2
        /// How often to look for backfills nobody is reading.
        public var scanInterval: Duration = .seconds(1)
        /// How often the progress message is edited.
        public var progressInterval: Duration = .seconds(5)
        public var pageSize = 100

        public init(owner: String) { self.owner = owner }
    }

    public let configuration: Configuration
    let store: BackfillStore
    private let chains: ChainStore
    private let log: EventLog
    private let rest: DiscordRESTClient
    private let logger: Logger
    private let active = Mutex<Set<Snowflake>>([])

    public init(store: BackfillStore, chains: ChainStore, log: EventLog, rest: DiscordRESTClient, configuration: Configuration, logger: Logger) {
        self.store = store
        self.chains = chains
        self.log = log
        self.rest = rest
        self.configuration = configuration
        self.logger = logger
    }

    /// Looks for backfills to read until a graceful shutdown; running backfills stop after their current page.
    public func run() async {
        await withDiscardingTaskGroup { group in
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                do throws(RedisError) {
                    for guild in try await self.store.unfinished() {
                        let busy = self.active.withLock { $0.count >= self.configuration.maxJobs || $0.contains(guild) }
                        guard !busy, try await self.store.claim(guild: guild, owner: self.configuration.owner) else { continue }
                        self.active.withLock { _ = $0.insert(guild) }
                        group.addTask {
                            await self.runJob(guild)
                            self.active.withLock { _ = $0.remove(guild) }
                        }
                    }
                } catch {
                    if error.code == .cancelled { return }
                    self.logger.warning("cannot look for backfills", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: self.configuration.scanInterval)
            }
        }
    }

    /// Another responder took the backfill over (this one was too slow to renew its lease).
    private struct LostLease: Error {}

    /// Consecutive failures of one channel's pages before it is skipped (and named in the report).
    static let maxFailuresPerItem = 20

    /// Why a backfill stops for good.
    private struct Fatal: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads one guild's backfill while holding its lease.
    private func runJob(_ guild: Snowflake) async {
        let owner = self.configuration.owner
        var metadata: Logger.Metadata = ["guild": "\(guild)"]
        do throws(any Error) {
            guard var job = try await self.store.job(guild: guild), !job.isFinished else {
                try await self.store.forget(guild: guild)
                try await self.store.release(guild: guild, owner: owner)
                return
            }
            if job.status == .listing {
                let (items, channels) = try await self.items(guild: guild)
                guard try await self.store.setItems(items, channels: channels, guild: guild, owner: owner),
                      let listed = try await self.store.job(guild: guild)
                else { return }
                job = listed
                self.logger.info("backfill started", metadata: metadata.merging(["channels": "\(channels)", "items": "\(items.count)"]) { $1 })
            } else {
                self.logger.info("backfill resumed", metadata: metadata.merging(["messages": "\(job.messages)", "at": "\(job.doneItems)/\(job.items)"]) { $1 })
            }
            if job.progressMessage == nil, let channel = job.channel {
                // Without a progress message (the bot may not post in that channel) the backfill still runs:
                // "-" records that there is none, so no later run tries again.
                let text = BackfillProgress(job: job).text(rate: 0, secondsLeft: nil)
                var id = "-"
                do {
                    id = try await self.rest.createMessage(channel: channel.rawValue, CreateMessage(content: text, nonce: "bf\(job.started)"))
                } catch {
                    if error.status == 401 { throw Fatal(description: "Discord refused the token (401)") }
                    self.logger.notice("backfill cannot post its progress", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                }
                try await self.store.setProgressMessage(id.isEmpty ? "-" : id, guild: guild)
                job.progressMessage = id.isEmpty ? "-" : id
            }
            let pageSize = max(1, min(100, self.configuration.pageSize))
            let clock = ContinuousClock()
            let began = clock.now
            let start = BackfillProgress(job: job)
            var lastEdit = clock.now
            var failures = 0
            while let item = job.current {
                if Task.isShuttingDownGracefully || Task.isCancelled {
                    try await self.store.release(guild: guild, owner: owner)
                    self.logger.info("backfill handed over", metadata: metadata.merging(["messages": "\(job.messages)"]) { $1 })
                    return
                }
                metadata["item"] = "\(item)"
                let page: [Message]
                do {
                    page = try await self.rest.messages(channel: item, before: job.cursor, limit: pageSize)
                    failures = 0
                } catch {
                    if error.status == 401 { throw Fatal(description: "Discord refused the token (401)") }
                    if Self.isRefusal(error) {
                        // Missing access, an unknown channel, a forum (no messages of its own): skip it.
                        self.logger.notice("backfill skips a channel", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                        guard try await self.store.advance(
                            guild: guild, owner: owner, item: item, cursor: nil, newest: nil, count: 0, finished: true,
                            skipped: error.status == 403
                        ), let next = try await self.store.job(guild: guild) else { return }
                        job = next
                        continue
                    }
                    failures += 1
                    if failures >= Self.maxFailuresPerItem {
                        // A channel that keeps failing (5xx, unreadable pages) must not hold up the rest.
                        self.logger.warning("backfill gives up a channel", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                        guard try await self.store.advance(
                            guild: guild, owner: owner, item: item, cursor: nil, newest: nil, count: 0, finished: true, skipped: true
                        ), let next = try await self.store.job(guild: guild) else { return }
                        job = next
                        failures = 0
                        continue
                    }
                    self.logger.warning("backfill page failed; retrying", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                    // Keep the lease while waiting.
                    guard try await self.store.advance(
                        guild: guild, owner: owner, item: item, cursor: nil, newest: nil, count: 0, finished: false
                    ) else { return }
                    try await Task.sleep(for: .milliseconds(min(10_000, 250 << min(failures, 6))))
                    continue
                }
                // The origin names this backfill: trainers apply its messages only while the guild's backfill is this
                // one (not after `/delete-data` or the bot's removal deleted it).
                let origin = "backfill:\(job.started)"
                let events = page.map { $0.chainEvent(kind: .create, source: .importer, guild: guild, origin: origin) }
                if !events.isEmpty { try await self.log.append(events, lane: .bulk) }
                guard try await self.store.advance(
                    guild: guild, owner: owner, item: item, cursor: page.last?.id.rawValue, newest: page.first?.id.rawValue,
                    count: page.count, finished: page.count < pageSize
                ), let next = try await self.store.job(guild: guild) else {
                    self.logger.info("backfill lost its lease or was cancelled", metadata: metadata)
                    return
                }
                job = next
                BackfillMetrics.messages.increment(by: page.count)
                if clock.now - lastEdit >= self.configuration.progressInterval {
                    lastEdit = clock.now
                    let elapsed = Self.seconds(clock.now - began)
                    let progress = BackfillProgress(job: job)
                    let rate = Double(job.messages - start.messages) / max(0.001, elapsed)
                    await self.showProgress(job, progress.text(rate: rate, secondsLeft: progress.secondsLeft(since: start, elapsed: elapsed)))
                }
            }
            try await self.store.finish(guild: guild, status: .done)
            let finished = try await self.store.job(guild: guild) ?? job
            let seconds = Double(max(0, Int64(Date().timeIntervalSince1970 * 1000) - finished.started)) / 1000
            self.logger.info("backfill done", metadata: metadata.merging(["messages": "\(finished.messages)", "seconds": "\(Int(seconds))"]) { $1 })
            await self.report(finished, seconds: seconds)
        } catch is LostLease {
            self.logger.info("backfill lost its lease while listing", metadata: metadata)
        } catch let fatal as Fatal {
            self.logger.error("backfill failed", metadata: metadata.merging(["error": "\(fatal)"]) { $1 })
            try? await self.store.finish(guild: guild, status: .failed, error: fatal.description)
            if let job = try? await self.store.job(guild: guild) { await self.report(job, seconds: 0) }
        } catch {
            // Redis or Discord failing: give the lease back; the next scan (here or elsewhere) carries on.
            self.logger.warning("backfill interrupted; it will carry on", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            try? await self.store.release(guild: guild, owner: owner)
            try? await Task.sleep(for: .seconds(5))
        }
    }

    /// The channels enabled for learning and their threads (active, and archived public ones), in that order, and
    /// how many of them are channels.
    private func items(guild: Snowflake) async throws(any Error) -> (items: [String], channels: Int) {
        // Listing can take many requests: keep the lease meanwhile.
        func renew() async throws(any Error) {
            guard try await self.store.renew(guild: guild, owner: self.configuration.owner) else {
                throw LostLease()
            }
        }
        let channels = try await self.chains.listenChannels(guild: guild)
        var active: [DiscordChannel] = []
        do {
            active = try await self.rest.activeThreads(guild: guild.rawValue)
            try await renew()
        } catch let error as DiscordRESTError {
            guard Self.isRefusal(error) else { throw error }
            self.logger.notice("backfill cannot list active threads", metadata: ["guild": "\(guild)", "error": "\(error)"])
        }
        var items: [String] = []
        var seen: Set<String> = []
        func add(_ id: String) { if seen.insert(id).inserted { items.append(id) } }
        for channel in channels {
            add(channel)
            for thread in active where thread.parentID?.rawValue == channel { add(thread.id.rawValue) }
            var before: String?
            while true {
                var page = ThreadList(threads: [])
                do {
                    page = try await self.rest.archivedPublicThreads(channel: channel, before: before)
                } catch {
                    guard Self.isRefusal(error) else { throw error }
                }
                try await renew()
                for thread in page.threads { add(thread.id.rawValue) }
                guard page.hasMore == true, let last = page.threads.last?.threadMetadata?.archiveTimestamp, last != before else { break }
                before = last
            }
        }
        return (items, channels.count)
    }

    /// This channel or list may not be read (403 Missing Access, 404 Unknown Channel, 400 a channel without
    /// messages of its own, such as a forum); the rest goes on. A 429 is not a refusal: it is retried.
    private static func isRefusal(_ error: DiscordRESTError) -> Bool {
        [400, 403, 404].contains(error.status ?? 0)
    }

    private func showProgress(_ job: BackfillStore.Job, _ text: String) async {
        guard let channel = job.channel, let message = job.progressMessage, message != "-" else { return }
        do {
            try await self.rest.editMessage(channel: channel.rawValue, id: message, content: text)
        } catch {
            self.logger.notice("cannot edit the backfill's progress", metadata: ["guild": "\(channel)", "error": "\(error)"])
        }
    }

    /// The final state into the progress message, and the report as a reply to it.
    private func report(_ job: BackfillStore.Job, seconds: Double) async {
        guard let channel = job.channel else { return }
        let report = BackfillProgress.report(job: job, seconds: seconds)
        await self.showProgress(job, report)
        do {
            try await self.rest.createMessage(
                channel: channel.rawValue, CreateMessage(content: report, replyTo: job.progressMessage == "-" ? nil : job.progressMessage, nonce: "bf\(job.started)r")
            )
        } catch {
            self.logger.notice("cannot post the backfill's report", metadata: ["channel": "\(channel)", "error": "\(error)"])
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

enum BackfillMetrics {
    static let messages = Counter(label: "markov_backfill_messages_total")
}
