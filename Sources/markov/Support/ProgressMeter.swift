import Foundation

/// Progress of long work on standard error: a bar redrawn in place on a terminal, a plain line every few seconds
/// otherwise (logs, CI), each with a rate and an ETA.
final class ProgressMeter: @unchecked Sendable {
    private let label: String
    private var total: Int
    private let unit: String
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private let start = ContinuousClock.now
    private var lastDraw = ContinuousClock.now - .seconds(60)

    init(label: String, total: Int, unit: String = "messages") {
        self.label = label
        self.total = max(total, 0)
        self.unit = unit
    }

    /// Reports `done` of `total` units of work (the total may grow while the work is found), with a note.
    func update(_ done: Int, total: Int, detail: String = "", force: Bool = false) {
        self.total = max(total, 0)
        self.detail = detail
        self.update(done, force: force)
    }

    private var detail = ""

    /// Reports `done` units of work; redraws at most 10 times a second (every 5 s when not a terminal).
    func update(_ done: Int, force: Bool = false) {
        let now = ContinuousClock.now
        let interval: Duration = self.isTerminal ? .milliseconds(100) : .seconds(5)
        guard force || now - self.lastDraw >= interval else { return }
        self.lastDraw = now
        let elapsed = Self.seconds(now - self.start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let remaining = rate > 0 ? Double(self.total - done) / rate : 0
        let fraction = self.total > 0 ? min(1, Double(done) / Double(self.total)) : 1
        let figures = "\(done)/\(self.total) \(self.unit)  \(Int(rate)) \(self.unit)/s  ETA \(Self.clock(remaining))"
            + (self.detail.isEmpty ? "" : "  (\(self.detail))")
        if self.isTerminal {
            let width = 24
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "")
                + String(repeating: " ", count: max(0, width - filled - 1))
            FileHandle.standardError.write(Data("\r\(self.label) [\(bar)] \(figures)\u{1B}[K".utf8))
        } else {
            FileHandle.standardError.write(Data("\(self.label): \(Int(fraction * 100))% \(figures)\n".utf8))
        }
    }

    /// Draws the final state and ends the line.
    func finish(_ done: Int, total: Int) {
        self.total = total
        self.detail = ""
        self.finish(done)
    }

    /// Draws the final state and ends the line.
    func finish(_ done: Int) {
        self.update(done, force: true)
        if self.isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    private static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "--:--" }
        let total = Int(seconds.rounded())
        return total >= 3600
            ? String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
            : String(format: "%d:%02d", total / 60, total % 60)
    }
}
