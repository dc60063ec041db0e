import ArgumentParser
import Foundation

/// The subcommands whose roles are not built yet. Each says so and exits non-zero, so scripts notice.
protocol NotBuiltYet: AsyncParsableCommand {
    /// What the command will do, and where the work is tracked.
    static var plannedIn: String { get }
}

extension NotBuiltYet {
    func run() async throws {
        let name = Self._commandName
        var standardError = StandardError()
        print("markov \(name): not built yet. \(Self.plannedIn)", to: &standardError)
        throw ExitCode(2)
    }
}

/// Text written to standard error.
struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandle.standardError.write(Data(string.utf8))
    }
}

struct Responder: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Answer mentions, the prefix and slash commands.")
    static let plannedIn = "Tracked by the responder issue."
}

struct RegisterCommands: NotBuiltYet {
    static let configuration = CommandConfiguration(abstract: "Install the slash commands with one PUT.")
    static let plannedIn = "Tracked by the responder issue."
}
