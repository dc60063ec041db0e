import CCurl
import NIOPosix
import Synchronization

/// An HTTP request.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    public var timeout: Duration

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                timeout: Duration = .seconds(15)) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// An HTTP response.
public struct HTTPResponse: Sendable {
    public var status: Int
    /// Header names in lower case; the last value of a repeated header wins.
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, headers: [String: String], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// A transport failure (no HTTP status): DNS, connect, TLS, timeout.
public struct HTTPTransportError: Error, Sendable, CustomStringConvertible {
    public var code: Int
    public var description: String
}

/// HTTP over libcurl, the one door to it. Requests run on a pool of blocking threads, never on Swift's
/// cooperative pool; easy handles are pooled, so connections (and TLS sessions) are reused.
public final class CurlHTTPClient: Sendable {
    private let handles = Mutex<[EasyHandle]>([])
    private let threadPool: NIOThreadPool

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    /// The blocking threads requests run on by default: each request holds one for its whole exchange, so
    /// there are enough for many replies in flight (NIO's shared pool has one per core).
    public static let sharedThreadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()

    /// A client that runs requests on `threadPool`.
    public init(threadPool: NIOThreadPool = CurlHTTPClient.sharedThreadPool) {
        _ = Self.globalInit
        self.threadPool = threadPool
    }

    /// Sends a request and returns the response, whatever its status.
    public func perform(_ request: HTTPRequest) async throws -> HTTPResponse {
        let handle = self.handles.withLock { $0.popLast() } ?? EasyHandle()
        let result = try await self.threadPool.runIfActive { () -> Result<HTTPResponse, HTTPTransportError> in
            handle.perform(request)
        }
        self.handles.withLock { if $0.count < 16 { $0.append(handle) } }
        return try result.get()
    }
}

/// One curl easy handle. Used by one request at a time (the pool hands it out exclusively).
private final class EasyHandle: @unchecked Sendable {
    let curl: UnsafeMutableRawPointer

    init() {
        self.curl = curl_easy_init()
    }

    deinit { curl_easy_cleanup(self.curl) }

    nonisolated(unsafe) static let emptyBody = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)

    /// What the callbacks fill in.
    final class Sink {
        var body: [UInt8] = []
        var headers: [String: String] = [:]
    }

    func perform(_ request: HTTPRequest) -> Result<HTTPResponse, HTTPTransportError> {
        let curl = self.curl
        curl_easy_reset(curl)
        let sink = Sink()
        let context = Unmanaged.passUnretained(sink).toOpaque()
        markov_curl_setopt_string(curl, CURLOPT_URL, request.url)
        markov_curl_setopt_long(curl, CURLOPT_NOSIGNAL, 1)
        let milliseconds = request.timeout.components.seconds * 1000
            + request.timeout.components.attoseconds / 1_000_000_000_000_000
        markov_curl_setopt_long(curl, CURLOPT_TIMEOUT_MS, Int(milliseconds))
        markov_curl_setopt_long(curl, CURLOPT_CONNECTTIMEOUT_MS, Int(min(milliseconds, 10_000)))
        markov_curl_setopt_string(curl, CURLOPT_CUSTOMREQUEST, request.method)
        markov_curl_setopt_callback(curl, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            data.map { sink.body.append(contentsOf: UnsafeRawBufferPointer(start: $0, count: length)) }
            return length
        }
        markov_curl_setopt_pointer(curl, CURLOPT_WRITEDATA, context)
        markov_curl_setopt_callback(curl, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            guard let data else { return length }
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
            if let colon = line.firstIndex(of: ":") {
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t\r\n")
                sink.headers[name] = value
            } else if line.hasPrefix("HTTP/") {
                sink.headers = [:]  // a new response (after a redirect or 100-continue)
            }
            return length
        }
        markov_curl_setopt_pointer(curl, CURLOPT_HEADERDATA, context)

        var list: UnsafeMutablePointer<curl_slist>? = nil
        for (name, value) in request.headers { list = curl_slist_append(list, "\(name): \(value)") }
        // No "Expect: 100-continue" round trip for bodies.
        list = curl_slist_append(list, "Expect:")
        defer { curl_slist_free_all(list) }
        markov_curl_setopt_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(list))

        let body = request.body ?? []
        return body.withUnsafeBufferPointer { buffer in
            if request.body != nil {
                markov_curl_setopt_offset(curl, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(buffer.count))
                // An empty body still needs a valid pointer.
                let pointer = buffer.baseAddress.map { UnsafeMutableRawPointer(mutating: $0) } ?? Self.emptyBody
                markov_curl_setopt_pointer(curl, CURLOPT_POSTFIELDS, pointer)
            }
            let code = curl_easy_perform(curl)
            guard code == CURLE_OK else {
                return .failure(HTTPTransportError(code: Int(code.rawValue),
                                                   description: String(cString: curl_easy_strerror(code))))
            }
            var status = 0
            markov_curl_getinfo_long(curl, CURLINFO_RESPONSE_CODE, &status)
            return .success(HTTPResponse(status: status, headers: sink.headers, body: sink.body))
        }
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text.removeFirst() }
        while let last = text.last, set.contains(last) { text.removeLast() }
        return String(text)
    }
}
