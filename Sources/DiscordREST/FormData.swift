/// A `multipart/form-data` body as Discord takes files: the JSON payload as `payload_json`, then each file as
/// `files[n]`, where `n` is the `id` of its entry in the payload's `attachments`.
public struct FormData: Sendable {
    /// A file to upload.
    public struct File: Sendable {
        public var filename: String
        public var contentType: String
        public var bytes: [UInt8]
        public init(filename: String, contentType: String, bytes: [UInt8]) {
            self.filename = filename
            self.contentType = contentType
            self.bytes = bytes
        }
    }

    public let boundary: String
    public let body: [UInt8]

    /// The body for `payload` (JSON) and `files`, in order (the first is `files[0]`).
    public init(payload: [UInt8], files: [File]) {
        // Random, and long enough that no file holds it by chance.
        let boundary = "markov-" + (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined()
        var body: [UInt8] = []
        func part(_ disposition: String, _ type: String, _ content: [UInt8]) {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; \(disposition)\r\nContent-Type: \(type)\r\n\r\n".utf8)
            body += content
            body += Array("\r\n".utf8)
        }
        part("name=\"payload_json\"", "application/json", payload)
        for (index, file) in files.enumerated() {
            let name = file.filename.filter { $0 != "\"" && $0 != "\r" && $0 != "\n" }
            part("name=\"files[\(index)]\"; filename=\"\(name)\"", file.contentType, file.bytes)
        }
        body += Array("--\(boundary)--\r\n".utf8)
        self.boundary = boundary
        self.body = body
    }

    /// The `Content-Type` header.
    public var contentType: String { "multipart/form-data; boundary=\(self.boundary)" }
}
