/// The web console's System view, computed from the metrics the roles export (the Prometheus text of
/// `/metrics`), so the page shows exactly what Prometheus would scrape: no second bookkeeping. Pure: it is fed
/// the text and the time, and keeps the previous values to turn counters into rates.
public struct MetricsSampler: Sendable {
    /// One sample of the series of a text: name → (labels → value).
    public struct Series: Sendable, Hashable {
        public var values: [String: [[String: String]: Double]] = [:]

        /// The sum of a metric over every label set (0 when absent).
        public func sum(_ name: String, where filter: ([String: String]) -> Bool = { _ in true }) -> Double {
            (self.values[name] ?? [:]).reduce(0) { filter($1.key) ? $0 + $1.value : $0 }
        }

        /// Parses the Prometheus text exposition format (comments and malformed lines are skipped).
        public init(prometheusText text: String) {
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let (name, labels, value) = Self.parse(line) else { continue }
                self.values[name, default: [:]][labels] = value
            }
        }

        public init() {}

        static func parse(_ line: Substring) -> (String, [String: String], Double)? {
            var labels: [String: String] = [:]
            let name: Substring
            var rest: Substring
            if let open = line.firstIndex(of: "{") {
                name = line[..<open]
                guard let close = line.lastIndex(of: "}"), close > open else { return nil }
                var body = line[line.index(after: open)..<close]
                while let equals = body.firstIndex(of: "=") {
                    let key = body[..<equals].trimmingPrefix(",").trimmingPrefix(" ")
                    var index = body.index(after: equals)
                    guard index < body.endIndex, body[index] == "\"" else { return nil }
                    index = body.index(after: index)
                    var value = ""
                    var escaped = false
                    while index < body.endIndex {
                        let character = body[index]
                        index = body.index(after: index)
                        if escaped {
                            value.append(character == "n" ? "\n" : character)
                            escaped = false
                        } else if character == "\\" {
                            escaped = true
                        } else if character == "\"" {
                            break
                        } else {
                            value.append(character)
                        }
                    }
                    labels[String(key)] = value
                    body = body[index...]
                }
                rest = line[line.index(after: close)...]
            } else {
                guard let space = line.firstIndex(of: " ") else { return nil }
                name = line[..<space]
                rest = line[space...]
            }
            rest = rest.drop { $0 == " " }
            let number = rest.prefix { $0 != " " }
            let value: Double? = switch number {
            case "+Inf": .infinity
            case "-Inf": -.infinity
            default: Double(number)
            }
            guard !name.isEmpty, let value else { return nil }
            return (String(name), labels, value)
        }
    }

    /// What the page draws for one interval.
    public struct Sample: Sendable, Hashable, Codable {
        /// Events appended to the event log per second (every lane, every role of this process).
        public var eventsPerSecond = 0.0
        /// Messages the trainer applied per second (created, updated and deleted).
        public var appliedPerSecond = 0.0
        /// Replies per second (Discord's and the consoles').
        public var repliesPerSecond = 0.0
        /// Generation calls per second, and their mean and 99th-percentile time over the interval (milliseconds;
        /// nil when none ran).
        public var generationsPerSecond = 0.0
        public var generationMeanMs: Double?
        public var generationP99Ms: Double?
        /// Trainer lag per partition this process's trainer owns: entries not yet applied, live and bulk lanes.
        public var lag: [String: Int] = [:]
        /// This process's CPU use (percent of one core) and resident memory.
        public var cpuPercent = 0.0
        public var residentBytes = 0
        /// With Discord: the shards this process holds, how many are ready, and the totals of identifies and resumes.
        public var shardsHeld: [Int]?
        public var shardsReady: Int?
        public var identifies: Int?
        public var resumes: Int?
    }

    private var previous: (series: Series, time: Double)?

    public init() {}

    /// The sample for the interval since the last call (rates are zero on the first call).
    public mutating func sample(_ series: Series, at time: Double) -> Sample {
        defer { self.previous = (series, time) }
        var sample = Sample()
        let previous = self.previous
        let seconds = previous.map { time - $0.time } ?? 0
        func rate(_ name: String, where filter: @escaping ([String: String]) -> Bool = { _ in true }) -> Double {
            guard let previous, seconds > 0 else { return 0 }
            return max(0, series.sum(name, where: filter) - previous.series.sum(name, where: filter)) / seconds
        }
        sample.eventsPerSecond = rate("markov_log_events_appended_total")
        sample.appliedPerSecond = rate("markov_trainer_messages_total") { $0["result"] != "skipped" }
        sample.repliesPerSecond = rate("markov_responder_replies_total")
        sample.generationsPerSecond = rate("markov_generation_seconds_count")
        if let previous, seconds > 0 {
            let count = series.sum("markov_generation_seconds_count") - previous.series.sum("markov_generation_seconds_count")
            let total = series.sum("markov_generation_seconds_sum") - previous.series.sum("markov_generation_seconds_sum")
            if count > 0 {
                sample.generationMeanMs = total / count * 1000
                sample.generationP99Ms = Self.quantile(0.99, now: series, before: previous.series, histogram: "markov_generation_seconds").map { $0 * 1000 }
            }
            sample.cpuPercent = max(0, series.sum("process_cpu_seconds_total") - previous.series.sum("process_cpu_seconds_total")) / seconds * 100
        }
        for lane in ["markov_stream_lag", "markov_bulk_lag"] {
            for (labels, value) in series.values[lane] ?? [:] {
                guard let partition = labels["partition"] else { continue }
                sample.lag[partition, default: 0] += Int(value)
            }
        }
        // A partition given up keeps its last gauge: show only the partitions the trainer owns now.
        let owned = Set((series.values["markov_trainer_partition_owned"] ?? [:]).filter { $0.value > 0 }.compactMap { $0.key["partition"] })
        if series.values["markov_trainer_partition_owned"] != nil { sample.lag = sample.lag.filter { owned.contains($0.key) } }
        sample.residentBytes = Int(series.sum("process_resident_memory_bytes"))
        if let held = series.values["markov_gateway_shard_held"] {
            sample.shardsHeld = held.filter { $0.value > 0 }.compactMap { $0.key["shard"].flatMap { Int($0) } }.sorted()
            sample.shardsReady = Int(series.sum("markov_gateway_shards_ready"))
            sample.identifies = Int(series.sum("markov_gateway_identifies_total"))
            sample.resumes = Int(series.sum("markov_gateway_resumes_total"))
        }
        return sample
    }

    /// The `q` quantile of a histogram's observations between two samples, interpolated within a bucket as
    /// Prometheus's `histogram_quantile` does; nil when nothing was observed.
    static func quantile(_ q: Double, now: Series, before: Series, histogram: String) -> Double? {
        let name = histogram + "_bucket"
        var cumulative: [Double: Double] = [:]
        for (labels, value) in now.values[name] ?? [:] {
            guard let bound = labels["le"].flatMap({ $0 == "+Inf" ? .infinity : Double($0) }) else { continue }
            var rest = labels
            rest["le"] = nil
            let earlier = (before.values[name] ?? [:]).first { $0.key["le"] == labels["le"] && $0.key.filter { $0.key != "le" } == rest }?.value ?? 0
            cumulative[bound, default: 0] += value - earlier
        }
        let bounds = cumulative.keys.sorted()
        guard let total = bounds.last.flatMap({ cumulative[$0] }), total > 0 else { return nil }
        let target = q * total
        var lower = 0.0
        var below = 0.0
        for bound in bounds {
            let count = cumulative[bound] ?? 0
            if count >= target {
                if bound == .infinity { return lower }
                let inBucket = count - below
                return inBucket > 0 ? lower + (bound - lower) * (target - below) / inBucket : bound
            }
            lower = bound
            below = count
        }
        return lower
    }
}
