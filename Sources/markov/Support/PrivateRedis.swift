import Foundation
import Logging
import Redis

/// The `redis-server` that `markov up` starts when no Redis is configured: data in `./data` (append-only file
/// on), listening on a unix socket only, stopped cleanly (SIGTERM, so it writes its AOF) when `up` ends.
///
/// The server daemonizes and is tracked by its pid file rather than as a child process: waiting on a child
/// through Foundation's `Process` blocks a thread, and every thread here belongs to the event loops. A server left
/// behind by a `markov up` that was killed with SIGKILL is found by its pid file and stopped at the next start.
final class PrivateRedis: Sendable {
    let directory: URL
    private let pid: pid_t
    private let logger: Logger

    /// The URL roles use to reach it.
    var url: String { "unix://" + self.directory.appendingPathComponent("redis.sock").path }

    /// Starts `redis-server` from `PATH` and waits until it answers.
    static func start(directory: String, logger: Logger) async throws -> PrivateRedis {
        let directoryURL = URL(fileURLWithPath: directory, isDirectory: true).standardizedFileURL
        try FileManager.default.createDirectory(at: directoryURL, withIntermediateDirectories: true)
        guard let server = Self.find("redis-server") else {
            throw ConfigurationError(
                "redis-server is not on PATH: install it (apt-get install redis-server, or `make run` does it) "
                    + "or set REDIS_URL to a running Redis"
            )
        }
        let socket = directoryURL.appendingPathComponent("redis.sock").path
        let pidFile = directoryURL.appendingPathComponent("redis.pid").path
        if let leftover = Self.readPid(pidFile), kill(leftover, 0) == 0 {
            logger.warning("stopping a private redis-server left running by an earlier markov up", metadata: ["redis.pid": "\(leftover)"])
            await Self.terminate(leftover)
        }
        try? FileManager.default.removeItem(atPath: pidFile)
        let launcher = try Self.spawn(server.path, arguments: [
            "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--dir", directoryURL.path,
            "--appendonly", "yes", "--save", "", "--daemonize", "yes", "--pidfile", pidFile,
            "--logfile", directoryURL.appendingPathComponent("redis.log").path,
        ])
        // The launcher forks the daemon and exits at once; reap it without blocking a thread.
        while waitpid(launcher, nil, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        // Wait for the socket to answer PING (loading a large AOF can take a while).
        var configuration = try RedisConfiguration(url: "unix://" + socket)
        configuration.commandTimeout = .milliseconds(500)
        let client = RedisClient(configuration: configuration, logger: logger)
        defer { client.shutdown() }
        let deadline = ContinuousClock.now + .seconds(60)
        while (try? await client.send("PING")) == nil {
            guard ContinuousClock.now < deadline else {
                throw ConfigurationError(
                    "the private redis-server did not start; see \(directoryURL.appendingPathComponent("redis.log").path)"
                )
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        guard let pid = Self.readPid(pidFile) else {
            throw ConfigurationError("the private redis-server wrote no pid file at \(pidFile)")
        }
        logger.info("private redis-server started", metadata: ["redis.directory": "\(directoryURL.path)", "redis.pid": "\(pid)"])
        return PrivateRedis(directory: directoryURL, pid: pid, logger: logger)
    }

    private init(directory: URL, pid: pid_t, logger: Logger) {
        self.directory = directory
        self.pid = pid
        self.logger = logger
    }

    /// Stops the server with SIGTERM and waits until it is gone (it flushes its append-only file first).
    func stop() async {
        await Self.terminate(self.pid)
        self.logger.info("private redis-server stopped")
    }

    private static func terminate(_ pid: pid_t) async {
        guard kill(pid, SIGTERM) == 0 else { return }
        let deadline = ContinuousClock.now + .seconds(30)
        while kill(pid, 0) == 0 && ContinuousClock.now < deadline {
            guard await Backoff.sleep(.milliseconds(20)) else { return }
        }
    }

    /// Starts a program with an empty signal mask and default signal handlers. A process started through
    /// Foundation inherits the starting thread's mask, and threads here may block SIGTERM; a redis-server with
    /// SIGTERM blocked could never be stopped.
    private static func spawn(_ path: String, arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard status == 0 else {
            throw ConfigurationError("could not start \(path): \(String(cString: strerror(status)))")
        }
        return pid
    }

    private static func readPid(_ path: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private static func find(_ name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        for directory in ["/usr/sbin", "/usr/local/sbin"] {
            let candidate = URL(fileURLWithPath: directory).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }
}
