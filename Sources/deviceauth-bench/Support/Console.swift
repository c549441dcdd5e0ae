import Foundation

/// Output of the benchmarks: results on standard output, progress on standard error, both
/// written at once (unbuffered) so they interleave correctly when piped.
enum Console {
    /// Writes one line to standard output.
    static func result(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Writes one progress line to standard error.
    static func progress(_ line: String) {
        FileHandle.standardError.write(Data(("# " + line + "\n").utf8))
    }

    /// `value` with exactly `digits` decimals, such as `1.50`.
    static func fixed(_ value: Double, _ digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }
}

/// One comparison of ours against a baseline, printed as the machine-readable line of
/// DESIGN.md ("Benchmarks") followed by one detail line for people:
///
///     BENCH client.evalsha.c64 ours=190000 baseline=120000 unit=ops/s ratio=1.58
///       ours: p50=… | baseline: …
struct BenchComparison: Sendable {
    /// The benchmark's name, such as `client.evalsha.c64`.
    var name: String
    /// Our figure.
    var ours: Double
    /// The baseline's figure.
    var baseline: Double
    /// The unit of both figures, such as `ops/s` or `bytes`.
    var unit: String
    /// Latencies and settings, for people.
    var detail: String

    /// ours / baseline (0 when the baseline is 0).
    var ratio: Double { baseline > 0 ? ours / baseline : 0 }

    /// The `BENCH …` line.
    var line: String {
        "BENCH \(name) ours=\(Self.figure(ours)) baseline=\(Self.figure(baseline)) unit=\(unit) ratio=\(Console.fixed(ratio, 2))"
    }

    /// Prints the `BENCH …` line and the detail line to standard output.
    func print() {
        Console.result(line)
        Console.result("  " + detail)
    }

    private static func figure(_ value: Double) -> String {
        value >= 100 ? Console.fixed(value, 0) : Console.fixed(value, 2)
    }
}
