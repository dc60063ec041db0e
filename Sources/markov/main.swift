import ArgumentParser
import NIOCore
import NIOPosix

// Swift concurrency runs on NIO's event loops, so a task that sends a Redis command and the socket it goes out
// on share a thread: no hop per command (docs/redis-client.md has the measurement). Nothing in this process
// may block a task for long; blocking C calls (libcurl) run on their own threads.
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()

do {
    var command = try Markov.parseAsRoot()
    if let asyncCommand = command as? any AsyncParsableCommand {
        try await runAsync(asyncCommand)
    } else {
        try command.run()
    }
} catch {
    Markov.exit(withError: error)
}

/// Runs the asynchronous `run()`; from a generic context overload resolution cannot pick the synchronous one.
func runAsync<Command: AsyncParsableCommand>(_ command: Command) async throws {
    var command = command
    try await command.run()
}
