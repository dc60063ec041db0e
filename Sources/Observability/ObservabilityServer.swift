#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// `/metrics` (Prometheus text), `/health` (the process is alive) and `/ready` (every readiness check passes)
/// for one role, over HTTP (hummingbird). Libraries emit through swift-metrics; ``bootstrap()`` points
/// swift-metrics at the Prometheus registry this server renders.
public enum Observability {
    /// The registry `/metrics` renders.
    public static let registry = PrometheusCollectorRegistry()

    private static let bootstrapped: Void = {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }()

    /// The metrics as `/metrics` renders them (Prometheus text), for views of this process's own metrics.
    public static func exposition() -> String {
        Self.recordProcess()
        return String(decoding: Self.registry.emitToBuffer(), as: UTF8.self)
    }

    /// Routes swift-metrics to the Prometheus registry (once per process).
    public static func bootstrap() { _ = Self.bootstrapped }

    /// A readiness check: its name and whether it passes now.
    public typealias Check = @Sendable () async -> (name: String, ready: Bool)

    /// The process's CPU time reported so far, so that the counter grows by what was used since.
    private static let reportedCPU = Mutex(0.0)

    /// The process's CPU seconds and resident memory, under the names Prometheus's own clients use
    /// (`process_cpu_seconds_total`, `process_resident_memory_bytes`), for CPU per unit of work on dashboards.
    static func recordProcess() {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return }
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let delta = Self.reportedCPU.withLock { reported -> Double in
            let delta = max(0, cpu - reported)
            reported += delta
            return delta
        }
        FloatingPointCounter(label: "process_cpu_seconds_total").increment(by: delta)
        // The second field of /proc/self/statm: resident pages.
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return }
        let fields = buffer[..<count].split(separator: 0x20)
        if fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) {
            Gauge(label: "process_resident_memory_bytes").record(pages * Int(sysconf(Int32(_SC_PAGESIZE))))
        }
    }

    /// Whether every check passes, answered within `limit` (not ready otherwise): a scrape must not wait for a
    /// Redis that does not answer, or Prometheus would see the role down instead of not ready. The checks left
    /// running finish on their own (each is a single bounded call).
    private static func isReady(_ checks: [Check], within limit: Duration) async -> Bool {
        let (answers, continuation) = AsyncStream.makeStream(of: Bool.self)
        Task { continuation.yield(await Self.readiness(checks).ready) }
        let timer = Task {
            try? await Task.sleep(for: limit)
            continuation.yield(false)
        }
        var iterator = answers.makeAsyncIterator()
        let ready = await iterator.next() ?? false
        continuation.finish()
        timer.cancel()
        return ready
    }

    /// Runs every check: whether all pass, and a line per check.
    private static func readiness(_ checks: [Check]) async -> (ready: Bool, lines: [String]) {
        var lines: [String] = []
        var ready = true
        for check in checks {
            let result = await check()
            ready = ready && result.ready
            lines.append("\(result.name) \(result.ready ? "ok" : "not ready")")
        }
        return (ready, lines)
    }

    /// The HTTP service for a role, on `host:port` (port 0: any free port, logged once bound).
    public static func server(
        host: String = "127.0.0.1", port: Int, checks: [Check], logger: Logger
    ) -> some Service {
        let router = Router()
        router.get("health") { _, _ -> String in "ok\n" }
        router.get("metrics") { _, _ -> Response in
            // Readiness as of this scrape, so that alerts see what `/ready` would answer (`markov_ready`).
            Gauge(label: "markov_ready").record(await Self.isReady(checks, within: .milliseconds(500)) ? 1 : 0)
            Self.recordProcess()
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Self.registry.emitToBuffer())))
        }
        router.get("ready") { _, _ -> Response in
            let (ready, lines) = await Self.readiness(checks)
            let body = lines.joined(separator: "\n") + "\n"
            return Response(status: ready ? .ok : .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)  // no line per request
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "markov"),
            onServerRunning: { channel in
                logger.info("serving /metrics, /health and /ready", metadata: ["http.address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: quiet
        )
    }
}
