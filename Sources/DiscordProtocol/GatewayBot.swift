/// The answer of `GET /gateway/bot`: where to connect, how many shards, and the identify limits.
public struct GatewayBot: Sendable, Codable, Hashable {
    public var url: String
    public var shards: Int
    public var sessionStartLimit: SessionStartLimit

    public struct SessionStartLimit: Sendable, Codable, Hashable {
        /// Identifies allowed per 24 h.
        public var total: Int
        /// Identifies left until the reset.
        public var remaining: Int
        /// Milliseconds until `remaining` resets to `total`.
        public var resetAfter: Int
        /// Identifies allowed at once: the bucket of a shard is `shard_id % max_concurrency`.
        public var maxConcurrency: Int

        public init(total: Int, remaining: Int, resetAfter: Int, maxConcurrency: Int) {
            self.total = total
            self.remaining = remaining
            self.resetAfter = resetAfter
            self.maxConcurrency = maxConcurrency
        }

        private enum CodingKeys: String, CodingKey {
            case total, remaining, resetAfter = "reset_after", maxConcurrency = "max_concurrency"
        }
    }

    public init(url: String, shards: Int, sessionStartLimit: SessionStartLimit) {
        self.url = url
        self.shards = shards
        self.sessionStartLimit = sessionStartLimit
    }

    private enum CodingKeys: String, CodingKey { case url, shards, sessionStartLimit = "session_start_limit" }
}

/// Discord's JSON error body: `{"code":50035,"message":"Invalid Form Body","errors":{…}}`.
public struct DiscordErrorBody: Sendable, Codable, Hashable {
    public var code: Int
    public var message: String
}
