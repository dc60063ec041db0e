import Foundation
import Logging
import Synchronization

/// Log lines as JSON objects, one per line on standard error, for log collectors:
/// `{"ts":"2026-11-28T10:00:00.123Z","level":"info","label":"markov.gateway","message":"ready","shard":"0/16"}`.
/// Metadata keys become top-level fields (`ts`, `level`, `label` and `message` are never replaced by them); keys
/// are sorted.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    private static let output = Mutex(())
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()

    func log(event: LogEvent) {
        var fields: [String: String] = [:]
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for (key, value) in merged { fields[key] = "\(value)" }
        fields["ts"] = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        fields["level"] = event.level.rawValue
        fields["label"] = self.label
        fields["message"] = "\(event.message)"
        guard var line = try? Self.encoder.encode(fields) else { return }
        line.append(0x0A)
        Self.output.withLock { _ in FileHandle.standardError.write(line) }
    }
}
