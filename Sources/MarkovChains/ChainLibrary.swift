import Foundation
import MarkovCore
import Redis

/// The Redis Functions library `markov` (ChainLibrary.lua): the chain store's only code inside Redis.
public enum ChainLibrary {
    /// The library, versioned by a hash of its source so a changed library is reloaded everywhere.
    public static let library: RedisFunctionLibrary = {
        guard let url = Bundle.module.url(forResource: "ChainLibrary", withExtension: "lua"),
            let source = try? String(contentsOf: url, encoding: .utf8)
        else {
            fatalError("ChainLibrary.lua is missing from the MarkovChains resource bundle")
        }
        var hash = StableHash()
        hash.combine(source.utf8)
        return RedisFunctionLibrary(name: "markov", version: hash.hex, source: source)
    }()
}
