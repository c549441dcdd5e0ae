import Foundation
import RedisClient
import Synchronization

/// The live progress line: rewritten in place on a terminal, a plain line every 5 s otherwise (stderr).
final class Progress: Sendable {
    private let recorder: Recorder
    private let total: Int?
    private let startedCount = Atomic<Int>(0)
    private let isTerminal = isatty(STDERR_FILENO) != 0

    init(recorder: Recorder, total: Int?) {
        self.recorder = recorder
        self.total = total
    }

    func started() {
        startedCount.wrappingAdd(1, ordering: .relaxed)
    }

    /// Prints until cancelled, then ends the line.
    func run() async {
        var lastRequests = 0
        var lastInstant = ContinuousClock.now
        let period: Duration = isTerminal ? .milliseconds(500) : .seconds(5)
        while !Task.isCancelled {
            do { try await Task.sleep(for: period) } catch { break }
            let counters = recorder.counters
            let now = ContinuousClock.now
            let seconds = (now - lastInstant).seconds
            let rate = seconds > 0 ? Double(counters.requests - lastRequests) / seconds : 0
            lastRequests = counters.requests
            lastInstant = now
            let elapsed = now - recorder.start
            let started = startedCount.load(ordering: .relaxed)
            let elapsedSeconds = elapsed.seconds
            let done = "\(counters.flowsDone)" + (total.map { "/\($0)" } ?? "")
            let line =
                "[" + String(format: "%6.1f", elapsedSeconds) + "s] devices \(done) done, \(started - counters.flowsDone) in flight, "
                + String(format: "%.0f", rate) + " req/s, \(counters.requests) requests, \(counters.errors) errors"
                + refreshPart(recorder.refreshCounters)
            write(isTerminal ? "\r\u{1B}[2K" + line : line + "\n")
        }
        if isTerminal { write("\n") }
    }

    private func refreshPart(_ counters: Recorder.RefreshCounters) -> String {
        counters == Recorder.RefreshCounters()
            ? ""
            : ", refresh: \(counters.rotations) rotations, \(counters.races) racing pairs, \(counters.revocations) revocations"
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
