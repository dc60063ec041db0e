import ArgumentParser
import DiscordREST
import Foundation

/// `markov probe [URL]`: a health check for platforms that run a command in the container (Compose, the
/// Dockerfile's HEALTHCHECK), whose runtime image has no HTTP client of its own.
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when a role's /ready answers 200 (a container health check).",
        discussion: "Without a URL, asks this container's own role: http://127.0.0.1:$MARKOV_HTTP_PORT/ready (9090 by default). Prints the role's answer when it is not ready."
    )

    @Argument(help: "The URL to ask (default: this container's /ready).") var url: String?
    @Option(help: "Seconds to wait for the answer.") var timeout = 3

    func run() async throws {
        let port = ProcessInfo.processInfo.environment["MARKOV_HTTP_PORT"].flatMap { Int($0) } ?? 9090
        let url = self.url ?? "http://127.0.0.1:\(port)/ready"
        let response: HTTPResponse
        do {
            response = try await CurlHTTPClient().perform(HTTPRequest(method: "GET", url: url, timeout: .seconds(max(1, self.timeout))))
        } catch {
            FileHandle.standardError.write(Data("\(url): \(error)\n".utf8))
            throw ExitCode(1)
        }
        guard response.status == 200 else {
            FileHandle.standardError.write(Data("\(url): \(response.status)\n\(String(decoding: response.body, as: UTF8.self))".utf8))
            throw ExitCode(1)
        }
    }
}
