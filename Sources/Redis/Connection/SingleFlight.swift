import Synchronization

/// One attempt at a piece of work at a time, shared by every caller that asks while it runs: the first caller does
/// the work in its own task (no task is started for it), the others wait for its result. A waiter that is
/// cancelled stops waiting at once; when the caller doing the work is cancelled, the waiters do not inherit its
/// cancellation: one of them takes the work over.
///
/// Connecting a pool's slot and learning a cluster's slot map go through one each, so a failing node sees one
/// attempt at a time, not a stampede.
final class SingleFlight<Value: Sendable>: Sendable {
    private typealias Waiter = CheckedContinuation<Result<Value, RedisError>?, Never>

    private struct State {
        var running = false
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    init() {}

    /// Does `work`, or waits for the attempt already under way and returns its result.
    func run(_ work: () async throws(RedisError) -> Value) async throws(RedisError) -> Value {
        while true {
            if Task.isCancelled { throw RedisError(.cancelled, "cancelled while waiting for another caller's attempt") }
            let leads = self.state.withLock { state -> Bool in
                guard !state.running else { return false }
                state.running = true
                return true
            }
            if leads {
                let result: Result<Value, RedisError>
                do {
                    result = .success(try await work())
                } catch {
                    result = .failure(error)
                }
                let waiters = self.state.withLock { state -> [Waiter] in
                    state.running = false
                    defer { state.waiters = [:] }
                    return Array(state.waiters.values)
                }
                // An attempt cut short by this caller's own cancellation is not the waiters' answer: they try again.
                let shared: Result<Value, RedisError>? = Task.isCancelled ? nil : result
                for waiter in waiters { waiter.resume(returning: shared) }
                return try result.get()
            }
            let id = self.state.withLock { state -> Int in
                state.nextWaiter += 1
                return state.nextWaiter
            }
            let outcome: Result<Value, RedisError>? = await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: Waiter) in
                    let waiting = self.state.withLock { state -> Bool in
                        // Finished meanwhile, or cancelled already: go round again (and lead, or stop).
                        guard state.running, !Task.isCancelled else { return false }
                        state.waiters[id] = continuation
                        return true
                    }
                    if !waiting { continuation.resume(returning: nil) }
                }
            } onCancel: {
                let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
                waiter?.resume(returning: nil)
            }
            if let outcome { return try outcome.get() }
        }
    }
}
