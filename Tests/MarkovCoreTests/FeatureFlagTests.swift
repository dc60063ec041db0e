@testable import MarkovCore
import Testing

@Suite("Feature flags")
struct FeatureFlagTests {
    let guilds = (0..<20_000).map { Snowflake(String(1_000_000_000_000_000 + $0 * 7919))! }

    @Test("rollouts read and print as stored")
    func text() throws {
        for (text, printed) in [("off", "off"), ("", "off"), ("all", "all"), ("5%", "5%"), ("0.5%", "0.5%"), ("12.34%", "12.34%"),
                                ("100%", "100%"), ("5% 456 123", "5% 123 456"), ("123,456", "123 456")] {
            #expect(try Rollout(parsing: text).description == printed, "\(text)")
        }
        for bad in ["5x", "101%", "-1%", "1.234%", "abc", "123 5%", "all 123", "%"] {
            #expect(throws: RolloutError.self, "\(bad)") { try Rollout(parsing: bad) }
        }
        #expect(Rollout.basisPoints("0.05") == 5)
        #expect(Rollout.basisPoints("7.5") == 750)
    }

    @Test("a percentage takes about that share of guilds, and a guild never leaves as it grows")
    func percentage() {
        var previous: Set<Snowflake> = []
        for basisPoints in [0, 10, 100, 500, 2_500, 5_000, 9_900, 10_000] {
            let rollout = Rollout(basisPoints: basisPoints)
            let chosen = Set(self.guilds.filter { rollout.includes($0, flag: "training-filters") })
            #expect(previous.isSubset(of: chosen), "a guild moved back at \(basisPoints)")
            let expected = Double(self.guilds.count) * Double(basisPoints) / 10_000
            #expect(abs(Double(chosen.count) - expected) <= max(30, expected * 0.1), "\(chosen.count) guilds at \(basisPoints) bp")
            previous = chosen
        }
        #expect(previous.count == self.guilds.count)
    }

    @Test("each flag draws its own guilds; listed guilds are in whatever the percentage")
    func perFlag() {
        let rollout = Rollout(basisPoints: 1_000)
        let a = Set(self.guilds.filter { rollout.includes($0, flag: "training-filters") })
        let b = Set(self.guilds.filter { rollout.includes($0, flag: "another-flag") })
        #expect(a != b)
        #expect(Double(a.intersection(b).count) < Double(a.count) * 0.2)
        let outside = self.guilds.first { !a.contains($0) }!
        #expect(Rollout(basisPoints: 1_000, guilds: [outside]).includes(outside, flag: "training-filters"))
        #expect(!Rollout.off.includes(outside, flag: "training-filters"))
        #expect(Rollout.all.includes(outside, flag: "training-filters"))
    }
}
