import Hummingbird
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

/// `/metrics` (Prometheus text), `/health` (the process is alive) and `/ready` (every readiness check passes)
/// for one role, over HTTP (hummingbird). Libraries emit through swift-metrics; ``bootstrap()`` points
/// swift-metrics at the Prometheus registry this server renders.
public enum Observability {
    /// The registry `/metrics` renders.
    public static let registry = PrometheusCollectorRegistry()

    private static let bootstrapped: Void = {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }()

    /// Routes swift-metrics to the Prometheus registry (once per process).
    public static func bootstrap() { _ = Self.bootstrapped }

    /// A readiness check: its name and whether it passes now.
    public typealias Check = @Sendable () async -> (name: String, ready: Bool)

    /// The HTTP service for a role, on `host:port` (port 0: any free port, logged once bound).
    public static func server(
        host: String = "0.0.0.0", port: Int, checks: [Check], logger: Logger
    ) -> some Service {
        let router = Router()
        router.get("health") { _, _ -> String in "ok\n" }
        router.get("metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Self.registry.emitToBuffer())))
        }
        router.get("ready") { _, _ -> Response in
            var lines: [String] = []
            var ready = true
            for check in checks {
                let result = await check()
                ready = ready && result.ready
                lines.append("\(result.name) \(result.ready ? "ok" : "not ready")")
            }
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
