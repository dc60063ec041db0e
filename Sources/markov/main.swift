import ArgumentParser
import NIOCore
import NIOPosix

// Swift concurrency runs on NIO's event loops, so a task that sends a Redis command and the socket it goes out
// on share a thread: no hop per command (docs/redis-client.md has the measurement). Nothing in this process
// may block a task for long; blocking C calls (libcurl) run on their own threads.
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
await Markov.main()
