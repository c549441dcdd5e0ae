import ArgumentParser
@_spi(Benchmarks) import DeviceAuthorizationHTTP
import Foundation
import RedisClient

/// `deviceauth-bench json`: the OAuth endpoints' JSON bodies as Codable structs through Foundation's
/// `JSONEncoder` (sorted keys, slashes unescaped: what the endpoints do since issue 21) against the
/// node's former flat-object writer over `[String: Any]` (kept here as the baseline, `FlatJSONWriter`),
/// the same bytes, in the same run. The Codable bodies were kept because they are faster.
struct JSONBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "json",
        abstract: "Response bodies: JSONEncoder with Codable structs vs the node's JSON writer (ns per body)."
    )

    @Option(help: "Encodings of each body per round.")
    var iterations: Int = 20_000

    @Option(help: "Rounds; the medians are compared.")
    var rounds: Int = 5

    func run() async throws {
        let deviceCode = String(repeating: "d", count: 56)
        let accessToken = String(repeating: "t", count: 600)
        let refreshToken = String(repeating: "r", count: 84)
        let uri = "https://auth.example.com/device"
        let complete = "https://auth.example.com/device?user_code=BCDF-GHJK"
        let pending = "the user has not yet approved the request"
        let cases: [(String, () throws -> [UInt8], () -> [UInt8])] = [
            (
                "device_authorization",
                {
                    JSONBodyBenchmark.deviceAuthorization(
                        deviceCode: deviceCode, userCode: "BCDF-GHJK", verificationURI: uri, complete: complete, expiresIn: 600, interval: 5)
                },
                {
                    FlatJSONWriter.encode([
                        "device_code": deviceCode, "user_code": "BCDF-GHJK", "verification_uri": uri, "verification_uri_complete": complete,
                        "expires_in": 600, "interval": 5,
                    ])
                }
            ),
            (
                "token",
                {
                    JSONBodyBenchmark.token(accessToken: accessToken, tokenType: "Bearer", expiresIn: 3600, scope: "profile email", refreshToken: refreshToken)
                },
                {
                    FlatJSONWriter.encode([
                        "access_token": accessToken, "token_type": "Bearer", "expires_in": 3600, "scope": "profile email", "refresh_token": refreshToken,
                    ])
                }
            ),
            (
                "error", { JSONBodyBenchmark.error("authorization_pending", pending) },
                { FlatJSONWriter.encode(["error": "authorization_pending", "error_description": pending]) }
            ),
        ]
        for (name, codable, writer) in cases {
            guard try codable() == writer() else {
                throw ValidationError("the two encodings of \(name) differ: \(String(decoding: try codable(), as: UTF8.self)) vs \(String(decoding: writer(), as: UTF8.self))")
            }
            let ours = try nanosecondsPerBody(codable)
            let baseline = try nanosecondsPerBody(writer)
            BenchComparison(
                name: "json.encode.\(name)", ours: ours, baseline: baseline, unit: "ns/body",
                detail:
                    "ours: the endpoints' Codable bodies through JSONEncoder; baseline: the former flat-object writer over [String: Any]; same \(writer().count) bytes; \(iterations) encodings × \(rounds) rounds, medians; lower is better"
            ).print()
        }
    }

    private func nanosecondsPerBody(_ encode: () throws -> [UInt8]) throws -> Double {
        var samples: [Double] = []
        for _ in 0..<max(1, rounds) {
            var bytes = 0
            let elapsed = try ContinuousClock().measure {
                for _ in 0..<max(1, iterations) { bytes &+= try encode().count }
            }
            precondition(bytes > 0)
            samples.append(Double(elapsed.nanoseconds))
        }
        return samples.sorted()[samples.count / 2] / Double(max(1, iterations))
    }
}

/// The flat-object JSON writer the endpoints used before issue 21 (keys sorted; string, integer,
/// boolean and string-array values), kept as the baseline of `deviceauth-bench json`.
enum FlatJSONWriter {
    static func encode(_ object: [String: Any]) -> [UInt8] {
        var out = "{"
        for (index, key) in object.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            appendString(key, to: &out)
            out += ":"
            switch object[key] {
            case let value as String: appendString(value, to: &out)
            case let value as Int: out += String(value)
            case let value as Bool: out += value ? "true" : "false"
            default: out += "null"
            }
        }
        return Array((out + "}").utf8)
    }

    static func appendString(_ value: String, to out: inout String) {
        out += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
