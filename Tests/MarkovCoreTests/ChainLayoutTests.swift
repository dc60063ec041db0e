import MarkovCore
import Testing

@Suite("Chain layout, alias tables and bucket tables")
struct ChainLayoutTests {
    @Test("alias tables give every count exactly its share", arguments: [1, 2, 3, 10, 257, 1200])
    func aliasMasses(size: Int) {
        var generator = SystemRandomNumberGenerator()
        let counts = (0..<size).map { _ in UInt64.random(in: 1...1000, using: &generator) }
        let table = AliasTable(counts: counts)
        #expect(table.total == counts.reduce(0, +))
        #expect(table.thresholds.allSatisfy { $0 <= table.total })
        // P(j) = mass_j / (n · total) must equal count_j / total: mass_j = count_j · n, exactly.
        #expect(table.masses() == counts.map { $0 * UInt64(size) })
    }

    @Test("linear hashing: splits move exactly the items whose bucket changes, and shapes fit their load")
    func linearHashing() {
        var shape = LinearHashing()
        var generator = SystemRandomNumberGenerator()
        let hashes = (0..<5000).map { _ in UInt32.random(in: 0..<(1 << 24), using: &generator) }
        var placed = Dictionary(grouping: hashes, by: { shape.bucket(of: $0) })
        var items = 0
        for hash in hashes {
            items += 1
            while shape.needsSplit(items: items) {
                let (from, into) = shape.advance()
                let old = placed[from] ?? []
                placed[from] = old.filter { shape.bucket(of: $0) == from }
                placed[into] = old.filter { shape.bucket(of: $0) == into }
                #expect(placed[from]!.count + placed[into]!.count == old.count, "every item stays in one of the two")
            }
            _ = hash
        }
        for (bucket, members) in placed { #expect(members.allSatisfy { shape.bucket(of: $0) == bucket }) }
        #expect(placed.keys.allSatisfy { $0 < shape.buckets })
        #expect(LinearHashing.shape(for: items) == shape, "the shape of a count is the shape grown to it")
    }

    @Test("small states round-trip, and stay within the listpack limit or are refused")
    func smallStates() throws {
        let successors = [
            ChainLayout.Successor(token: Array("hello".utf8), nextHash: 0xABCDEF, count: 3),
            ChainLayout.Successor(token: [], nextHash: 0, count: 300),
            ChainLayout.Successor(token: Array("{g:1}\u{0}é".utf8), nextHash: 7, count: 1),
        ]
        let encoded = try #require(ChainLayout.encodeSmall(successors))
        #expect(encoded.first == 3)
        #expect(ChainLayout.decodeState(encoded) == .small(successors))
        #expect(encoded.count == ChainLayout.smallSize(tokenLengths: successors.map(\.token.count), counts: successors.map(\.count)))
        let one = [ChainLayout.Successor(token: Array("x".utf8), nextHash: 1, count: 1)]
        #expect(ChainLayout.encodeSmall(one)?.count == 7, "one successor: n, hash, length, token, count")
        #expect(ChainLayout.encodeSmall([]) == nil)
        #expect(ChainLayout.decodeState([2, 1]) == nil, "a truncated value is not a state")
    }

    @Test("big states: the header and the alias blob round-trip; increments and decrements encode")
    func bigStates() throws {
        let header = ChainLayout.BigHeader(total: 100, columns: 3, pending: 4, decrements: 2, live: 3)
        #expect(ChainLayout.decodeState(header.encoded) == .big(header))
        let successors = (0..<20).map { ChainLayout.Successor(token: Array("t\($0)".utf8), nextHash: UInt32($0), count: UInt32($0 % 7 + 1)) }
        let built = ChainLayout.AliasBlob.build(successors)
        let decoded = try #require(ChainLayout.AliasBlob.decode(built.blob))
        #expect(decoded.total == UInt32(successors.reduce(0) { $0 + $1.count }))
        #expect(decoded.columns == 20)
        #expect(decoded.entries.map(\.token) == successors.map(\.token))
        #expect(decoded.entries.map(\.base) == successors.map(\.count))
        #expect(decoded.entries.map(\.offset) == built.offsets)
        #expect(decoded.areaLength == built.areaLength)
        let change = try #require(ChainLayout.AliasBlob.decodeChange(
            field: ChainLayout.AliasBlob.changeField(built.offsets[3]), value: ChainLayout.AliasBlob.changeValue(decrements: 2, weight: 9)
        ))
        #expect(change.offset == built.offsets[3] && change.decrements == 2 && change.weight == 9)
    }

    @Test("message records round-trip; malformed ones are recognised")
    func messageRecords() {
        for record in [MessageRecord.learnt(author: "42", tokens: ["a", "b{"]), .deleted, .editedBeforeCreate(tokens: ["x"])] {
            #expect(MessageRecord(record.encoded) == record)
        }
        #expect(MessageRecord(Array("no-tab-here".utf8)) == nil)
        #expect(MessageRecord([]) == nil)
        #expect(MessageRecord.contentHash(["a", "b"]) == String(SHA1.hex("a b".utf8).prefix(16)))
    }
}
