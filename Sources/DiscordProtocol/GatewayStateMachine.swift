/// A gateway session that can be resumed: what the client keeps, in Redis, between connections and processes.
public struct GatewaySession: Sendable, Hashable {
    public var sessionID: String
    /// The URL to resume at (`resume_gateway_url` of READY).
    public var resumeURL: String
    /// The last sequence number whose dispatch is safely handled.
    public var sequence: Int
    /// The shard count the session was identified with.
    public var shardCount: Int

    public init(sessionID: String, resumeURL: String, sequence: Int, shardCount: Int) {
        self.sessionID = sessionID
        self.resumeURL = resumeURL
        self.sequence = sequence
        self.shardCount = shardCount
    }
}

/// The life of one shard's gateway connections, as a pure state machine: inputs are received frames, heartbeat
/// ticks and closes; outputs are actions for the runtime to carry out. No sockets, no clocks, no randomness.
///
/// ```
/// disconnected ──connected()──▶ awaitingHello ──Hello──▶ identifying ──READY──▶ ready
///                                             └──Hello + session──▶ resuming ──RESUMED──▶ ready
/// any ──op 7 / op 9 / zombie / close──▶ disconnected (then resume or identify) or stopped (fatal close code)
/// ```
public struct GatewayStateMachine: Sendable {
    public enum State: Sendable, Hashable {
        case disconnected
        case awaitingHello
        case identifying
        case resuming
        case ready
        /// The client asked to close the connection and waits for it to go.
        case closing
        /// A fatal close code: this shard stops.
        case stopped(reason: String)
    }

    /// What the runtime must do.
    public enum Action: Sendable {
        /// Heartbeat every `interval`, the first beat after `interval × random[0,1)`.
        case startHeartbeating(interval: Duration)
        /// Take an identify slot (one per bucket per 5 s, across processes), then send Identify.
        case identify
        /// Send Resume.
        case resume(sessionID: String, sequence: Int)
        /// Send a heartbeat now.
        case sendHeartbeat(sequence: Int?)
        /// A new session: keep it (Redis) with the bot user from READY.
        case sessionStarted(Ready)
        /// The session resumed.
        case resumed
        /// A dispatch to forward (or drop) in sequence order.
        case dispatch(GatewayFrame)
        /// Close the connection with this code; ``closed(code:)`` then says how to go on.
        case close(code: Int, reason: String)
    }

    /// What to do after a connection closed.
    public enum NextStep: Sendable, Hashable {
        /// Connect to `url` (the resume URL, or `nil` for the discovery URL) after at least `delay`, and resume
        /// when `resume` is true, identify otherwise.
        case reconnect(resume: Bool, url: String?, delay: Duration)
        /// Stop the shard.
        case stop(reason: String)
    }

    public let shard: ShardID
    public private(set) var state: State = .disconnected
    /// The session, while one can be resumed.
    public private(set) var session: GatewaySession?
    /// The highest sequence number received.
    public private(set) var lastSequence: Int?
    /// Whether a heartbeat was sent and its ACK has not come.
    public private(set) var awaitingACK = false
    /// What the client meant when it asked for a close (its own close code is echoed back by the server).
    private var closeIntent: NextStep?

    /// Starts with a session restored from Redis, if any; a session of another shard count is discarded.
    public init(shard: ShardID, restoring session: GatewaySession? = nil) {
        self.shard = shard
        if let session, session.shardCount == shard.count {
            self.session = session
            self.lastSequence = session.sequence
        }
    }

    /// The session as of the last frame received: what to checkpoint once everything before it is in the log.
    public var checkpoint: GatewaySession? {
        guard var session = self.session else { return nil }
        session.sequence = self.lastSequence ?? session.sequence
        return session
    }

    /// Where the next connection goes: the resume URL when there is a session, else `nil` (discovery).
    public var connectURL: String? { self.session?.resumeURL }

    /// The socket is open; Hello comes next.
    public mutating func connected() {
        self.state = .awaitingHello
        self.awaitingACK = false
        self.closeIntent = nil
    }

    /// A frame arrived.
    public mutating func received(_ frame: GatewayFrame) -> [Action] {
        if let sequence = frame.sequence { self.lastSequence = max(self.lastSequence ?? sequence, sequence) }
        switch GatewayOpcode(rawValue: frame.opcode) {
        case .hello:
            guard case .hello(let interval) = frame.payload, self.state == .awaitingHello else { return [] }
            let beat = Action.startHeartbeating(interval: .milliseconds(max(1, interval)))
            if let session {
                self.state = .resuming
                return [beat, .resume(sessionID: session.sessionID, sequence: self.lastSequence ?? session.sequence)]
            }
            self.state = .identifying
            return [beat, .identify]
        case .heartbeat:
            return [.sendHeartbeat(sequence: self.lastSequence)]
        case .heartbeatACK:
            self.awaitingACK = false
            return []
        case .reconnect:
            return self.close(then: .reconnect(resume: self.session != nil, url: self.session?.resumeURL, delay: .zero),
                              reason: "server asked to reconnect (op 7)")
        case .invalidSession:
            guard case .invalidSession(let resumable) = frame.payload else { return [] }
            // Discord asks for a pause of 1 to 5 s before the next identify or resume.
            if resumable, let session {
                return self.close(then: .reconnect(resume: true, url: session.resumeURL, delay: .seconds(1)),
                                  reason: "invalid session (op 9, resumable)")
            }
            self.session = nil
            self.lastSequence = nil
            return self.close(then: .reconnect(resume: false, url: nil, delay: .seconds(1)),
                              reason: "invalid session (op 9, not resumable)")
        case .dispatch:
            switch frame.payload {
            case .ready(let ready):
                self.state = .ready
                self.session = GatewaySession(
                    sessionID: ready.sessionID, resumeURL: ready.resumeGatewayURL, sequence: frame.sequence ?? 0,
                    shardCount: self.shard.count
                )
                return [.sessionStarted(ready), .dispatch(frame)]
            case .resumed:
                self.state = .ready
                return [.resumed, .dispatch(frame)]
            default:
                return [.dispatch(frame)]
            }
        case .identify, .resume, nil:
            return []
        }
    }

    /// The heartbeat timer fired: beat, or close a zombie connection (no ACK since the last beat) and resume.
    public mutating func heartbeatDue() -> [Action] {
        switch self.state {
        case .awaitingHello, .disconnected, .closing, .stopped:
            return []
        case .identifying, .resuming, .ready:
            break
        }
        if self.awaitingACK {
            return self.close(
                then: .reconnect(resume: self.session != nil, url: self.session?.resumeURL, delay: .zero),
                reason: "zombie connection: no heartbeat ACK since the last beat"
            )
        }
        self.awaitingACK = true
        return [.sendHeartbeat(sequence: self.lastSequence)]
    }

    /// The connection closed, with the server's close code if there was a close frame.
    public mutating func closed(code: Int?) -> NextStep {
        if case .stopped(let reason) = self.state { return .stop(reason: reason) }
        let step: NextStep
        if let intent = self.closeIntent {
            step = intent
        } else {
            switch GatewayCloseAction(closeCode: code) {
            case .resume where self.session != nil:
                step = .reconnect(resume: true, url: self.session?.resumeURL, delay: .zero)
            case .resume, .identify:
                self.session = nil
                self.lastSequence = nil
                step = .reconnect(resume: false, url: nil, delay: .zero)
            case .fatal(let reason):
                self.state = .stopped(reason: reason)
                return .stop(reason: reason)
            }
        }
        self.closeIntent = nil
        self.state = .disconnected
        self.awaitingACK = false
        return step
    }

    /// The connection cannot go on (its payloads can no longer be read): close it and resume.
    public mutating func closeToResume(reason: String) -> [Action] {
        guard self.state != .closing else { return [] }
        return self.close(then: .reconnect(resume: self.session != nil, url: self.session?.resumeURL, delay: .zero),
                          reason: reason)
    }

    /// The shard is being shut down: close so that the session stays resumable for whoever runs it next.
    public mutating func shutdown() -> [Action] {
        self.close(then: .stop(reason: "shutting down"), reason: "shutting down")
    }

    private mutating func close(then step: NextStep, reason: String) -> [Action] {
        self.closeIntent = step
        self.state = .closing
        return [.close(code: GatewayClientCloseCode.resumable, reason: reason)]
    }
}
