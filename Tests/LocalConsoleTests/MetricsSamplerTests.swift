import LocalConsole
import Testing

@Suite("The web console's System view from the Prometheus text")
struct MetricsSamplerTests {
    static func text(appended: Int, applied: Int, skipped: Int, generations: [Double: Int], sum: Double, cpu: Double) -> String {
        var lines = [
            "# TYPE markov_log_events_appended_total counter",
            #"markov_log_events_appended_total{lane="live"} \#(appended)"#,
            #"markov_log_events_appended_total{lane="bulk"} \#(appended * 2)"#,
            #"markov_trainer_messages_total{result="created"} \#(applied)"#,
            #"markov_trainer_messages_total{result="skipped"} \#(skipped)"#,
            #"markov_stream_lag{partition="1"} 5"#,
            #"markov_bulk_lag{partition="1"} 7"#,
            #"markov_stream_lag{partition="2"} 9"#,
            #"markov_trainer_partition_owned{partition="1"} 1"#,
            #"markov_trainer_partition_owned{partition="2"} 0"#,
            "process_cpu_seconds_total \(cpu)",
            "process_resident_memory_bytes 1048576",
            "a malformed line",
            #"markov_weird{label="with \"quotes\", a comma and \\ a backslash"} 3"#,
        ]
        var cumulative = 0
        for bound in generations.keys.sorted() {
            cumulative += generations[bound]!
            lines.append(#"markov_generation_seconds_bucket{le="\#(bound == .infinity ? "+Inf" : "\(bound)")"} \#(cumulative)"#)
        }
        lines.append("markov_generation_seconds_count \(cumulative)")
        lines.append("markov_generation_seconds_sum \(sum)")
        return lines.joined(separator: "\n") + "\n"
    }

    @Test("parses labels with escapes, skips what is not a sample")
    func parse() {
        let series = MetricsSampler.Series(prometheusText: Self.text(appended: 1, applied: 1, skipped: 0, generations: [:], sum: 0, cpu: 0))
        #expect(series.sum("markov_log_events_appended_total") == 3)
        #expect(series.values["markov_weird"]?.keys.first?["label"] == #"with "quotes", a comma and \ a backslash"#)
        #expect(series.values["a"] == nil)
    }

    @Test("counters become rates over the interval; lag shows only owned partitions; p99 interpolates like histogram_quantile")
    func rates() {
        var sampler = MetricsSampler()
        let first = sampler.sample(
            .init(prometheusText: Self.text(appended: 10, applied: 5, skipped: 1, generations: [0.005: 10, 0.01: 0, .infinity: 0], sum: 0.03, cpu: 1)),
            at: 100
        )
        #expect(first.eventsPerSecond == 0 && first.generationP99Ms == nil, "no rates before a second sample")
        // Two seconds later: 60 more events (20 live, 40 bulk), 10 more applied, 3 more skipped, 100 more generations
        // of which 90 under 5 ms and 10 between 5 and 10 ms, and half a CPU second.
        let second = sampler.sample(
            .init(prometheusText: Self.text(appended: 30, applied: 15, skipped: 4, generations: [0.005: 100, 0.01: 10, .infinity: 0], sum: 0.53, cpu: 1.5)),
            at: 102
        )
        #expect(second.eventsPerSecond == 30)
        #expect(second.appliedPerSecond == 5, "skipped messages are not applied")
        #expect(second.generationsPerSecond == 50)
        #expect(abs((second.generationMeanMs ?? 0) - 5) < 1e-9)
        // The 99th of 100 observations: 9 of the 10 in (5 ms, 10 ms] → 5 + 5 × 9/10 = 9.5 ms.
        #expect(abs((second.generationP99Ms ?? 0) - 9.5) < 1e-9)
        #expect(second.lag == ["1": 12], "partition 2 is not owned here any more")
        #expect(abs(second.cpuPercent - 25) < 1e-9)
        #expect(second.residentBytes == 1 << 20)
        #expect(second.shardsHeld == nil, "no gateway in this process")
    }

    @Test("a counter that went down (a restart) gives no negative rate")
    func reset() {
        var sampler = MetricsSampler()
        _ = sampler.sample(.init(prometheusText: Self.text(appended: 100, applied: 0, skipped: 0, generations: [:], sum: 0, cpu: 0)), at: 0)
        let after = sampler.sample(.init(prometheusText: Self.text(appended: 1, applied: 0, skipped: 0, generations: [:], sum: 0, cpu: 0)), at: 1)
        #expect(after.eventsPerSecond == 0)
    }
}

@Suite("Import progress")
struct ImportProgressTests {
    @Test("reading is the first half, applying the second; the ETA follows the rate so far")
    func fraction() {
        var progress = ConsoleImport.Progress()
        progress.bytes = 1000
        progress.bytesRead = 500
        #expect(progress.fraction == 0.25)
        progress.phase = .applying
        progress.appended = 100
        progress.applied = 50
        progress.elapsed = 30
        #expect(progress.fraction == 0.75)
        #expect(progress.eta == 10)
        progress.phase = .failed
        progress.appended = 0
        #expect(progress.fraction == 0.25, "a file that failed while read shows how far it was read")
        progress.phase = .done
        #expect(progress.fraction == 1 && progress.eta == 0)
    }
}
