/// An error from the Redis client: a connection that failed or closed, a deadline that passed, bytes that were
/// not RESP, an error reply from the server, or a cluster redirect loop.
///
/// The ``code`` is opaque so new cases can be added without breaking callers; compare it with the static
/// members of ``Code``. Server errors keep their prefix (`NOSCRIPT`, `MOVED`, `BUSYGROUP`, …) in
/// ``serverErrorPrefix`` so callers can branch on it without parsing ``message``.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case connectionFailed, connectionClosed, timeout, protocolError, server, redirectLimit
            case clusterUnavailable, invalidConfiguration, cancelled, transactionAborted, shutDown
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A TCP or unix socket connection could not be opened, or AUTH/SELECT failed.
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection closed (or was closed) while the command was in flight.
        public static let connectionClosed = Code(.connectionClosed)
        /// The command's deadline passed; its connection was discarded.
        public static let timeout = Code(.timeout)
        /// The server sent bytes that are not valid RESP2.
        public static let protocolError = Code(.protocolError)
        /// The server answered with an error reply; see ``RedisError/serverErrorPrefix``.
        public static let server = Code(.server)
        /// A cluster command was redirected (MOVED/ASK) or retried (TRYAGAIN, CLUSTERDOWN, LOADING) too often.
        public static let redirectLimit = Code(.redirectLimit)
        /// No node of the cluster could be reached to learn the slot map.
        public static let clusterUnavailable = Code(.clusterUnavailable)
        /// A URL or setting could not be understood.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The caller's task was cancelled while waiting on a command.
        public static let cancelled = Code(.cancelled)
        /// A transaction did not run: a key it watched changed before `EXEC`.
        public static let transactionAborted = Code(.transactionAborted)
        /// The client was shut down (``RedisClient/shutdown()``): it takes no more commands.
        public static let shutDown = Code(.shutDown)

        public var description: String {
            switch self.base {
            case .connectionFailed: "connection failed"
            case .connectionClosed: "connection closed"
            case .timeout: "timeout"
            case .protocolError: "protocol error"
            case .server: "server error"
            case .redirectLimit: "redirect limit"
            case .clusterUnavailable: "cluster unavailable"
            case .invalidConfiguration: "invalid configuration"
            case .cancelled: "cancelled"
            case .transactionAborted: "transaction aborted"
            case .shutDown: "client shut down"
            }
        }
    }

    /// What kind of failure this is.
    public var code: Code
    /// A sentence for people: what failed, where, and when possible why.
    public var message: String
    /// The error that caused this one, if any (a socket error, say).
    public var underlying: (any Error)?
    /// Where the error was raised.
    public var file: String
    /// Where the error was raised.
    public var line: Int

    /// Creates an error.
    public init(
        _ code: Code,
        _ message: String,
        underlying: (any Error)? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.file = file
        self.line = line
    }

    /// For a server error, the first word of the reply (`NOSCRIPT`, `MOVED`, `ERR`, …); otherwise `nil`.
    public var serverErrorPrefix: Substring? {
        guard self.code == .server else { return nil }
        return self.message.prefix(while: { $0 != " " })
    }

    public var description: String {
        var text = "Redis \(self.code): \(self.message)"
        if let underlying { text += " (\(underlying))" }
        return text
    }
}
