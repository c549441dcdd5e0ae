import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorizationHTTP

@Suite("Fuzz: form bodies", .serialized)
struct FormBodyFuzzTests {

    static let allowed: CharacterSet = {
        var set = CharacterSet.alphanumerics
        set.insert(charactersIn: "-._~")
        return set
    }()

    @Test("FormBody.parse: 30k generated forms round-trip; 30k garbage bodies give a typed failure or a form, never a crash")
    func forms() async {
        var rng = SplitMix64(seed: 6749)
        let scalars: [String] = ["a", "Z", "0", " ", "+", "&", "=", "%", "é", "😀", "\u{0}", "\n", "~", "-", "\"", "<", "ß"]
        for index in 0..<30_000 {
            if index % 1_000 == 0 { await Task.yield() }
            // Distinct names, non-empty values of any characters, form-encoded.
            var pairs: [(String, String)] = []
            for index in 0..<Int.random(in: 0...6, using: &rng) {
                let value = (0..<Int.random(in: 1...12, using: &rng)).map { _ in scalars.randomElement(using: &rng)! }.joined()
                pairs.append(("n\(index)" + (scalars.randomElement(using: &rng)!), value))
            }
            pairs = Dictionary(pairs, uniquingKeysWith: { first, _ in first }).map { ($0.key, $0.value) }
            let body = pairs.map { "\($0.0.addingPercentEncoding(withAllowedCharacters: Self.allowed)!)=\($0.1.addingPercentEncoding(withAllowedCharacters: Self.allowed)!)" }
                .joined(separator: "&")
            do {
                let form = try FormBody.parse(body)
                for (name, value) in pairs where form[name] != value {
                    Issue.record("\(body.debugDescription): \(name) = \(form[name].debugDescription), expected \(value.debugDescription)")
                    return
                }
            } catch {
                Issue.record("\(body.debugDescription) refused: \(error)")
                return
            }
        }
        let tokens = ["a", "b", "=", "&", "%", "%2", "%41", "%FF", "%C3%A9", "%ZZ", "+", "%00", "é", "&&", "==", "%E2%82", "%ED%A0%80", "a=1", "a=2"]
        var parsed = 0
        var refused = 0
        for index in 0..<30_000 {
            if index % 1_000 == 0 { await Task.yield() }
            let body = (0..<Int.random(in: 0...10, using: &rng)).map { _ in tokens.randomElement(using: &rng)! }.joined()
            do {
                let form = try FormBody.parse(body)
                parsed += 1
                // Whatever parsed re-encodes to a body that parses to the same values.
                if let value = form["a"] {
                    let again = try FormBody.parse("a=" + value.addingPercentEncoding(withAllowedCharacters: Self.allowed)!)
                    #expect(again["a"] == value)
                }
            } catch let failure as FormBody.Failure {
                guard failure == .malformed || { if case .repeated = failure { return true } else { return false } }() else {
                    Issue.record("\(body.debugDescription): unexpected failure \(failure)")
                    return
                }
                refused += 1
            } catch {
                Issue.record("\(body.debugDescription): untyped error \(error)")
                return
            }
        }
        #expect(parsed > 1_000 && refused > 1_000, "both outcomes reached: \(parsed) parsed, \(refused) refused")
    }

    @Test("FormBody.parse: the parameter cap counts non-empty pieces; 64 pass, 65 fail before the 65th is decoded")
    func parameterCap() throws {
        let sixtyFour = (0..<64).map { "p\($0)=v" }.joined(separator: "&")
        #expect(try FormBody.parse(sixtyFour, maxParameters: 64).parameterCount == 64)
        // Empty pieces are free: 64 parameters among 10 000 '&'.
        let padded = String(repeating: "&", count: 5_000) + sixtyFour + String(repeating: "&", count: 5_000)
        #expect(try FormBody.parse(padded, maxParameters: 64).parameterCount == 64)
        // The 65th is refused even when it is malformed: the cap is checked before decoding.
        #expect(throws: FormBody.Failure.tooManyParameters(limit: 64)) { try FormBody.parse(sixtyFour + "&%ZZ=1", maxParameters: 64) }
        #expect(throws: FormBody.Failure.tooManyParameters(limit: 64)) { try FormBody.parse(sixtyFour + "&p0=1", maxParameters: 64) }
        #expect(FormBody.Failure.tooManyParameters(limit: 64).description == "too many parameters (at most 64)")
    }

    @Test("FormBody.parse without a cap: 16 KiB of each hostile shape parses to the exact answer (names with empty values are still checked for repeats)")
    func hostileShapesUncapped() throws {
        let emptyValues = (0..<2_500).map { "\($0)=&" }.joined()
        #expect(try FormBody.parse(emptyValues).parameterCount == 0)
        // A repeat of the first empty-valued name, 2 500 names later, is still found.
        #expect(throws: FormBody.Failure.repeated("0")) { try FormBody.parse(emptyValues + "0=") }
        let distinct = (0..<2_000).map { "p\($0)=\($0)" }.joined(separator: "&")
        let form = try FormBody.parse(distinct)
        #expect(form.parameterCount == 2_000)
        #expect(form["p1999"] == "1999")
        #expect(try FormBody.parse(String(repeating: "&", count: 16_384)).parameterCount == 0)
        #expect(throws: FormBody.Failure.malformed) { try FormBody.parse(String(repeating: "=&", count: 8_192)) }
    }
}
