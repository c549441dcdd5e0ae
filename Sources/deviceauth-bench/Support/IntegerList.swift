import ArgumentParser
import Foundation

/// A comma-separated list of positive integers given as one option value, such as `1,16,64`.
struct IntegerList: ExpressibleByArgument, Sendable, CustomStringConvertible {
    /// The integers, in the order given.
    var values: [Int]

    /// Creates a list from integers.
    init(_ values: [Int]) { self.values = values }

    init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        var values: [Int] = []
        for part in parts {
            guard let value = Int(part), value > 0 else { return nil }
            values.append(value)
        }
        guard !values.isEmpty else { return nil }
        self.values = values
    }

    var description: String { values.map(String.init).joined(separator: ",") }
    var defaultValueDescription: String { description }
}
