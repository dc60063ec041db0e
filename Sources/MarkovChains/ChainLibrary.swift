import Foundation
import MarkovCore
import Redis

/// The Redis Functions libraries of this module: `markov` (ChainLibrary.lua), the chain store's only code inside
/// Redis, and `markov_leases` (LeaseLibrary.lua), the partition leases.
public enum ChainLibrary {
    /// The chain store's library, versioned by a hash of its source so a changed library is reloaded everywhere.
    public static let library = Self.load("ChainLibrary", name: "markov")

    /// The lease library.
    public static let leases = Self.load("LeaseLibrary", name: "markov_leases")

    private static func load(_ resource: String, name: String) -> RedisFunctionLibrary {
        guard let url = Bundle.module.url(forResource: resource, withExtension: "lua"),
            let source = try? String(contentsOf: url, encoding: .utf8)
        else {
            fatalError("\(resource).lua is missing from the MarkovChains resource bundle")
        }
        var hash = StableHash()
        hash.combine(source.utf8)
        return RedisFunctionLibrary(name: name, version: hash.hex, source: source)
    }
}
