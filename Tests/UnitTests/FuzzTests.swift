import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

/// The fuzz tests' seeded generator, so a failing input can be reproduced from the seed.
typealias SeededRandom = SplitMix64

extension SplitMix64 {
    mutating func pick<T>(_ choices: [T]) -> T { choices[Int(next() % UInt64(choices.count))] }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
}

/// Property tests with many seeded random inputs: no crash, and the invariants hold.
///
/// Serialized, and each loop yields every 1 000 inputs: CPU-bound loops would otherwise hold the
/// cooperative pool's threads (two on a 2-core machine) for seconds and starve the timing-sensitive
/// tests running beside them.
@Suite("Fuzz: user codes, device codes, Redis URLs", .serialized)
struct FuzzTests {
    /// `FUZZ_SCALE=10` runs ten times as many inputs (a longer local run); CI uses 1.
    static let scale = max(1, Int(ProcessInfo.processInfo.environment["FUZZ_SCALE"] ?? "") ?? 1)

    static let alphabet = Set(UserCode.alphabet)

    /// Random text that looks like what people type: alphabet letters in both cases, dashes,
    /// spaces, vowels, digits, punctuation and some non-ASCII scalars.
    static func typed(_ rng: inout SeededRandom) -> String {
        let pieces: [String] = ["B", "c", "D", "x", "Z", "k", "-", " ", "A", "e", "1", "0", "_", ".", "é", "ß", "Ｂ", "😀", "\u{0}", "\t", "\u{301}", "Ǆ"]
        var text = ""
        for _ in 0..<rng.int(0...80) { text += rng.pick(pieces) }
        return text
    }

    @Test("UserCode.normalize: 200k inputs; output only from the alphabet, 8 long, idempotent, equal to a reference")
    func userCodes() async {
        var rng = SeededRandom(seed: 8628)
        var accepted = 0
        for index in 0..<200_000 * Self.scale {
            if index % 1_000 == 0 { await Task.yield() }
            let input = Self.typed(&rng)
            let normalized = UserCode.normalize(input)
            // The reference: ASCII upper-casing, keep alphabet bytes, at most 64 bytes of input.
            let kept = input.utf8.map { ($0 >= 97 && $0 <= 122) ? $0 - 32 : $0 }.filter { Self.alphabet.contains($0) }
            let expected = input.utf8.count <= 64 && kept.count == UserCode.length ? String(decoding: kept, as: UTF8.self) : nil
            guard normalized == expected else {
                Issue.record("normalize(\(input.debugDescription)) = \(normalized.debugDescription), expected \(expected.debugDescription)")
                return
            }
            guard let normalized else { continue }
            accepted += 1
            guard normalized.utf8.count == 8, normalized.utf8.allSatisfy(Self.alphabet.contains),
                UserCode.normalize(normalized) == normalized,
                UserCode.normalize(UserCode.display(normalized)) == normalized,
                UserCode.normalize(UserCode.display(normalized).lowercased()) == normalized
            else {
                Issue.record("invariant broken for \(input.debugDescription) → \(normalized)")
                return
            }
        }
        #expect(accepted > 1_000, "the generator must reach valid codes too (\(accepted))")
        for _ in 0..<2_000 {
            let code = UserCode.generate()
            #expect(UserCode.normalize(code) == code)
            #expect(UserCode.display(code).wholeMatch(of: /[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}/) != nil)
        }
    }

    static func isWellFormedDeviceCode(_ code: String) -> Bool {
        let bytes = Array(code.utf8)
        let base64 = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8))
        return bytes.count == 56 && bytes.allSatisfy(base64.contains)
    }

    @Test("device codes: 30k generated and mutated codes; decode(deviceCode:) accepts exactly the format and round-trips; base64url round-trips")
    func deviceCodes() async {
        var rng = SeededRandom(seed: 5_2)
        let keys = KeySchema(prefix: "t", secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8))
        let mutations: [String] = ["A", "=", "+", "/", ".", "é", "", "\u{0}", "AA", "F", "g"]
        for index in 0..<30_000 * Self.scale {
            if index % 1_000 == 0 { await Task.yield() }
            let tag = String(format: "%04x", rng.int(0...0xffff))
            let id = String(format: "%08x%08x", rng.int(0...0x7fff_ffff), rng.int(0...0x7fff_ffff))
            let made = keys.makeDeviceCode(tag: tag, id: id)
            var code = made.code
            #expect(keys.decode(deviceCode: code).map { $0.tag + $0.id + $0.digest } == tag + id + made.digest)
            // Mutate: replace, insert or delete at a random position.
            var characters = Array(code)
            let position = rng.int(0...characters.count - 1)
            switch rng.int(0...2) {
            case 0: characters[position] = Character(rng.pick(mutations.filter { $0.count == 1 }))
            case 1: characters.insert(contentsOf: rng.pick(mutations), at: position)
            default: characters.remove(at: position)
            }
            code = String(characters)
            let parsed = keys.decode(deviceCode: code)
            guard (parsed != nil) == Self.isWellFormedDeviceCode(code), parsed.map({ $0.tag.count == 4 && $0.id.count == 16 }) ?? true else {
                Issue.record("decode(deviceCode: \(code.debugDescription)) = \(String(describing: parsed))")
                return
            }
        }
        for length in 0..<200 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let text = Base64URL.encode(bytes)
            var padded = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            while padded.count % 4 != 0 { padded += "=" }
            #expect(Data(base64Encoded: padded).map(Array.init) == bytes)
            #expect(Base64URL.decode(text.utf8) == bytes)
        }
    }

    /// A Redis URL assembled from plausible and hostile fragments.
    static func redisURL(_ rng: inout SeededRandom) -> String {
        let scheme = rng.pick(["redis://", "REDIS://", "unix://", "rediss://", "http://", "redis:", "", "redis:///", "unix:"])
        let userinfo = rng.pick(["", "user:pw@", ":pw@", "user@", "u%40x:p%3Ass@", "%ZZ:x@", ":@", "a:b:c@", "üser:pässword@", "user:%00@"])
        let host = rng.pick(["127.0.0.1", "localhost", "[::1]", "", "::1", "[", "redis.example.com", "host name", "%41", "999.1.1.1"])
        let port = rng.pick(["", ":6379", ":0", ":65535", ":65536", ":-1", ":abc", ":", ":99999999999999999999"])
        let path = rng.pick(["", "/", "/0", "/15", "/-1", "/abc", "/tmp/redis.sock", "//x", "/1/2"])
        let query = rng.pick(["", "?db=2", "?db=-3", "?db=x", "?password=secret", "?db=1&password=p", "?db=1&db=2", "?", "#frag"])
        var url = scheme + userinfo + host + port + path + query
        if rng.int(0...9) == 0, !url.isEmpty {
            var characters = Array(url)
            characters[rng.int(0...characters.count - 1)] = rng.pick(["%", " ", "\u{0}", "é", "@", "/", "?", "["])
            url = String(characters)
        }
        return url
    }

    @Test("RedisClientConfiguration(url:): 20k URLs; a typed RedisError, or a sane configuration that round-trips")
    func redisURLs() async throws {
        var rng = SeededRandom(seed: 6379)
        var parsed = 0
        var refused = 0
        var oddHosts: Set<String> = []
        for index in 0..<20_000 * Self.scale {
            if index % 1_000 == 0 { await Task.yield() }
            let url = Self.redisURL(&rng)
            let configuration: RedisClientConfiguration
            do {
                configuration = try RedisClientConfiguration(url: url)
            } catch let error as RedisError {
                guard error.code == .invalidURL || error.code == .unsupported else {
                    Issue.record("\(url.debugDescription): unexpected code \(error.code)")
                    return
                }
                refused += 1
                continue
            } catch {
                Issue.record("\(url.debugDescription): untyped error \(error)")
                return
            }
            parsed += 1
            guard configuration.database >= 0, configuration.username == nil || configuration.password != nil else {
                Issue.record("\(url.debugDescription): database \(configuration.database), user without password")
                return
            }
            // Round trip: the configuration written back as a URL parses to the same configuration.
            var allowed = CharacterSet.alphanumerics
            allowed.insert(charactersIn: "-._~")
            func escape(_ text: String) -> String { text.addingPercentEncoding(withAllowedCharacters: allowed)! }
            let credentials = configuration.password.map { (configuration.username.map(escape) ?? "") + ":" + escape($0) + "@" } ?? ""
            let canonical: String
            switch configuration.endpoint {
            case .tcp(let host, let port):
                guard !host.isEmpty, (1...65535).contains(port) else {
                    Issue.record("\(url.debugDescription): tcp \(host):\(port)")
                    return
                }
                // A host must be a name or an address; percent-decoding must not smuggle in '@', '/', ' '….
                guard host.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || ".-_:".unicodeScalars.contains($0)) }) else {
                    oddHosts.insert(host)
                    continue
                }
                canonical = "redis://\(credentials)\(host.contains(":") ? "[\(host)]" : host):\(port)/\(configuration.database)"
            case .unix(let path):
                guard path.hasPrefix("/") else {
                    Issue.record("\(url.debugDescription): unix path \(path)")
                    return
                }
                canonical = "unix://\(credentials)\(path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed)!)?db=\(configuration.database)"
            }
            let again: RedisClientConfiguration
            do { again = try RedisClientConfiguration(url: canonical) } catch {
                Issue.record("\(url.debugDescription) → \(canonical.debugDescription) does not parse again: \(error)")
                return
            }
            guard again.endpoint == configuration.endpoint, again.username == configuration.username,
                again.password == configuration.password, again.database == configuration.database
            else {
                Issue.record("\(url.debugDescription) → \(canonical.debugDescription) parses differently")
                return
            }
        }
        #expect(parsed > 1_000 && refused > 1_000, "both outcomes reached: \(parsed) parsed, \(refused) refused")
        #expect(oddHosts.isEmpty, "hosts accepted: \(oddHosts.sorted())")
    }
}
