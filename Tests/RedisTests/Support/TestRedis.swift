import Foundation
import Logging
import Redis
import Testing

/// The Redis servers `make test` starts, and private ones a test starts for itself.
enum TestRedis {
    static let environment = ProcessInfo.processInfo.environment

    /// Whether integration tests run: the servers are configured, or this is CI (where a missing server must
    /// fail the run rather than skip it).
    static let isConfigured = environment["MARKOV_TEST_REDIS_URL"] != nil || environment["CI"] != nil

    /// The standalone server's URL.
    static var standaloneURL: String { environment["MARKOV_TEST_REDIS_URL"] ?? "redis://127.0.0.1:16379" }

    /// The cluster's seed nodes.
    static var clusterNodes: String {
        environment["MARKOV_TEST_CLUSTER_NODES"] ?? "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003"
    }

    static let logger: Logger = {
        var logger = Logger(label: "redis-tests")
        logger.logLevel = .warning
        return logger
    }()

    /// A client of the standalone server.
    static func standalone(_ adjust: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: standaloneURL)
        adjust(&configuration)
        return RedisClient(configuration: configuration, logger: logger)
    }

    /// A client of the cluster.
    static func cluster(_ adjust: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisClient {
        var configuration = try RedisConfiguration(clusterNodes: clusterNodes)
        adjust(&configuration)
        return RedisClient(configuration: configuration, logger: logger)
    }

    /// A key prefix no other test run uses.
    static func uniqueKey(_ name: String) -> String {
        "test:\(name):\(UUID().uuidString)"
    }
}

/// A `redis-server` a test owns: started on a free loopback port (and optionally a unix socket), killed and
/// restarted on demand, removed at the end.
final class PrivateRedisServer: @unchecked Sendable {
    let port: Int
    let directory: URL
    let extraArguments: [String]
    private var process: Process?

    init(extraArguments: [String] = []) throws {
        self.port = try Self.freePort()
        self.directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("markov-redis-\(UUID().uuidString)")
        self.extraArguments = extraArguments
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        try self.start()
    }

    var socketPath: String { self.directory.appendingPathComponent("redis.sock").path }

    func start() throws {
        let process = Process()
        process.executableURL = URL(
            fileURLWithPath: TestRedis.environment["MARKOV_TEST_REDIS_SERVER"] ?? "/usr/bin/redis-server"
        )
        process.arguments = [
            "--bind", "127.0.0.1", "--port", String(self.port), "--dir", self.directory.path,
            "--save", "", "--appendonly", "no", "--unixsocket", self.socketPath, "--unixsocketperm", "700",
        ] + self.extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        // Wait until it accepts connections.
        for _ in 0..<200 {
            if Self.canConnect(port: self.port) { return }
            usleep(20_000)
        }
        throw RedisError(.connectionFailed, "private redis-server did not start on port \(self.port)")
    }

    func kill() {
        guard let process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        self.kill()
        try? FileManager.default.removeItem(at: self.directory)
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw RedisError(.connectionFailed, "no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
