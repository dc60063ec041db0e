import MarkovCore
import Testing

@Suite("Blocklist entries")
struct BlockEntryTests {
    @Test("entries are trimmed and lowercased; wildcards at the ends only")
    func parse() throws {
        #expect(try BlockEntry("  Heck ").text == "heck")
        #expect(try BlockEntry("DARN*").text == "darn*")
        #expect(try BlockEntry("*ING").text == "*ing")
        #expect(try BlockEntry("**mid**").text == "*mid*")
        #expect(try BlockEntry("École").text == "école")
        for bad in ["", "   ", "*", "***", "two words", "a*b", "nul\u{0}", String(repeating: "x", count: 10_000), "tab\there"] {
            #expect(throws: BlockEntry.InvalidEntry.self, "\(bad.prefix(20))") { try BlockEntry(bad) }
        }
        let long = try #require(throws: BlockEntry.InvalidEntry.self) { try BlockEntry(String(repeating: "x", count: 10_000)) }
        #expect(long.description.contains("at most 100"))
    }

    @Test("matching: whole tokens, ASCII case-insensitive, prefix, suffix and inner wildcards; the end is never blocked")
    func matching() throws {
        let exact = try BlockEntry("heck")
        #expect(exact.blocks("heck") && exact.blocks("HECK") && exact.blocks("Heck"))
        #expect(!exact.blocks("heckin") && !exact.blocks("oheck") && !exact.blocks(""))
        let prefix = try BlockEntry("darn*")
        #expect(prefix.blocks("darn") && prefix.blocks("Darnit") && !prefix.blocks("adarn"))
        let suffix = try BlockEntry("*ping")
        #expect(suffix.blocks("flipping") && suffix.blocks("PING") && !suffix.blocks("pings"))
        let inner = try BlockEntry("*nk*")
        #expect(inner.blocks("thinking") && inner.blocks("NK") && !inner.blocks("kn"))
        // Letters beyond ASCII match as stored (lowercase), as the sampler in Redis compares them.
        let accented = try BlockEntry("École")
        #expect(accented.blocks("école") && accented.blocks("éCOLE") && !accented.blocks("École"))
    }
}
