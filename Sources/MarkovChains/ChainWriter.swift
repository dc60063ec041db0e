import MarkovCore
import Redis

/// Sends a partition owner's writes to a guild: each ``ChainWrite`` as one `MULTI`/`EXEC` transaction under a
/// `WATCH` of the guild's meta, after checking that no newer owner has written the guild (its epoch) and that the
/// owner's previous transaction is the last one that went through (its write sequence). The transaction then
/// records the owner's epoch and the next write sequence. Refusals are errors whose message starts with `FENCED`
/// or `WSEQ`; a meta changed between the check and `EXEC` aborts the transaction.
struct ChainWriter: Sendable {
    let redis: RedisClient
    /// The owner's lease: checked again right before `EXEC`, so a pause between the owner's last look at it and
    /// the transaction leaves the narrowest window.
    let handle: PartitionHandle

    /// Runs one guild's write; returns the guild's new write sequence.
    func commit(_ write: ChainWrite, epoch: UInt64, wseq: Int, timeout: Duration) async throws(RedisError) -> Int {
        let meta = RedisArgument.string(write.keys.meta)
        let results = try await self.redis.transaction(
            watch: [meta],
            read: [RedisCommand("HMGET", meta, "epoch", "wseq")],
            decide: { replies throws(RedisError) in
                let fields = replies.first?.array ?? []
                let storedEpoch = fields.first.flatMap { $0.string.flatMap { UInt64($0) } } ?? 0
                let storedWseq = fields.count > 1 ? fields[1].string.flatMap { Int($0) } ?? 0 : 0
                if storedEpoch > epoch {
                    throw RedisError(.server, "FENCED a partition owner of epoch \(storedEpoch) has written guild \(write.keys.guild); this writer has epoch \(epoch)")
                }
                guard self.handle.isWritable else { throw RedisError(.cancelled, "the partition's lease may have expired") }
                if storedWseq != wseq {
                    throw RedisError(.server, "WSEQ guild \(write.keys.guild) is at write \(storedWseq), the writer expected \(wseq)")
                }
            },
            commands: write.commands + [RedisCommand("HSET", meta, "epoch", .integer(Int(epoch)), "wseq", .integer(wseq + 1))],
            timeout: timeout
        )
        for case .error(let message) in results {
            // A command failed inside the transaction (the data has a type nobody should have given it): the guild's
            // chain in Redis may now disagree with the owner's, which forgets it and reads it again.
            throw RedisError(.server, message)
        }
        return wseq + 1
    }
}
