import ArgumentParser
@_spi(Benchmarks) import DeviceAuthorizationHTTP
import Foundation
import RedisClient

/// `deviceauth-bench form`: the cost of parsing hostile form bodies against a benign body of the
/// same size, in the same run. Each hostile shape is the worst a 16 KiB body can do to a parser
/// (empty values, empty pieces, thousands of distinct names); the benign body is one 16 KiB
/// parameter. A linear parser keeps every ratio a small constant; a quadratic one (the old
/// array of empty names) showed ~150× on `empty-values`.
///
/// The parser runs with the cap lifted (`maxParameters` = Int.max), so what is measured is the
/// parser's own growth, not the early refusal the cap gives on the server.
struct FormBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "form",
        abstract: "Form parser: hostile 16 KiB bodies vs one 16 KiB parameter (ns per body)."
    )

    @Option(help: "Body size in bytes.")
    var size: Int = 16 * 1024

    @Option(help: "Parses of each body per round.")
    var iterations: Int = 200

    @Option(help: "Rounds; the medians are compared.")
    var rounds: Int = 5

    /// Bodies of about `size` bytes made by repeating a piece made from its index.
    static func body(size: Int, _ piece: (Int) -> String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size + 32)
        var index = 0
        while bytes.count < size {
            bytes += Array(piece(index).utf8)
            index += 1
        }
        return Array(bytes.prefix(size))
    }

    func run() async throws {
        let benign = Array("client_id=".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: size - 10)
        let shapes: [(String, [UInt8])] = [
            ("empty-values", Self.body(size: size) { "\($0)=&" }),
            ("empty-pieces", [UInt8](repeating: UInt8(ascii: "&"), count: size)),
            ("distinct-names", Self.body(size: size) { "p\($0)=1&" }),
            ("escaped-value", Array("client_id=".utf8) + Self.body(size: size - 10) { _ in "%41" }),
        ]
        func nanosecondsPerParse(_ bytes: [UInt8]) -> Double {
            var samples: [Double] = []
            for _ in 0..<max(1, rounds) {
                let clock = ContinuousClock()
                var parameters = 0
                let elapsed = clock.measure {
                    for _ in 0..<max(1, iterations) { parameters &+= FormParserBenchmark.parse(bytes, maxParameters: .max) ?? 0 }
                }
                precondition(parameters >= 0)
                samples.append(Double(elapsed.nanoseconds))
            }
            return samples.sorted()[samples.count / 2] / Double(max(1, iterations))
        }
        let baseline = nanosecondsPerParse(benign)
        for (name, bytes) in shapes {
            let parsed = FormParserBenchmark.parse(bytes, maxParameters: .max).map(String.init) ?? "refused"
            let ours = nanosecondsPerParse(bytes)
            BenchComparison(
                name: "form.parse.\(name)", ours: ours, baseline: baseline, unit: "ns/body",
                detail: "\(bytes.count) bytes, \(parsed) parameters with values; baseline: one \(benign.count)-byte parameter; \(iterations) parses × \(rounds) rounds, medians"
            ).print()
        }
    }
}
