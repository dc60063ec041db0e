import Logging

/// A versioned library of Redis Functions (Lua), loaded on every master at start-up.
///
/// The client adds a function `<name>__version` to the source that returns ``version``; loading first asks
/// each master for it and sends `FUNCTION LOAD REPLACE` only where the answer differs, so starting many
/// processes at once does not reload the library on every start.
public struct RedisFunctionLibrary: Sendable, Hashable {
    /// The library name, as in the source's `#!lua name=…` line.
    public var name: String
    /// A version that changes whenever the source does.
    public var version: String
    /// The Lua source, starting with `#!lua name=<name>`.
    public var source: String

    /// Describes a library.
    public init(name: String, version: String, source: String) {
        self.name = name
        self.version = version
        self.source = source
    }

    /// The name of the function that reports the loaded version.
    public var versionFunction: String { "\(self.name)__version" }

    /// The source that is loaded: the library's own, plus its version function.
    var loadedSource: String {
        let version = self.version.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'")
        return self.source + """

            redis.register_function{function_name='\(self.versionFunction)', \
            callback=function() return '\(version)' end, flags={'no-writes'}}

            """
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var result = ""
        for character in self {
            if character == target { result += replacement } else { result.append(character) }
        }
        return result
    }
}

extension RedisClient {
    /// Makes sure `library` at its version is loaded on every master; returns the masters where it was
    /// (re)loaded. Safe to call from many processes at once.
    @discardableResult
    public func load(_ library: RedisFunctionLibrary) async throws(RedisError) -> [RedisEndpoint] {
        var loaded: [RedisEndpoint] = []
        for master in try await self.masters() {
            let current: RedisReply?
            do {
                current = try await self.send(RedisCommand("FCALL_RO", .string(library.versionFunction), 0), to: master)
            } catch where error.code == .server {
                current = nil
            }
            guard current?.string != library.version else { continue }
            try await self.send(RedisCommand("FUNCTION", "LOAD", "REPLACE", .string(library.loadedSource)), to: master)
            loaded.append(master)
            self.logger.info(
                "redis function library loaded",
                metadata: [
                    "redis.library": "\(library.name)", "redis.library.version": "\(library.version)",
                    "redis.endpoint": "\(master)",
                ]
            )
        }
        return loaded
    }

    /// Calls a function of `library` with `FCALL` (or `FCALL_RO` when `readOnly`, which replicas may serve).
    /// All keys must share one hash slot in a cluster. If the function is missing (a server restarted without
    /// its data, or a failover to a replica that never had it), the library is loaded again and the call is
    /// retried once.
    @discardableResult
    public func call(
        _ function: String,
        in library: RedisFunctionLibrary,
        keys: [RedisArgument],
        arguments: [RedisArgument] = [],
        readOnly: Bool = false
    ) async throws(RedisError) -> RedisReply {
        let command = RedisCommand(
            readOnly ? "FCALL_RO" : "FCALL",
            [.string(function), .integer(keys.count)] + keys + arguments
        )
        do {
            return try await self.send(command)
        } catch where error.code == .server && error.message.contains("Function not found") {
            self.logger.info(
                "redis function missing; loading its library again",
                metadata: ["redis.library": "\(library.name)", "redis.function": "\(function)"]
            )
            try await self.load(library)
            return try await self.send(command)
        }
    }
}
