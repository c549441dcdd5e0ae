import ArgumentParser
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

    struct DeviceAuthorizationBody: Codable {
        let device_code: String
        let user_code: String
        let verification_uri: String
        let verification_uri_complete: String
        let expires_in: Int
        let interval: Int
    }

    struct TokenBody: Codable {
        let access_token: String
        let token_type: String
        let expires_in: Int
        let scope: String
        let refresh_token: String
    }

    struct ErrorBody: Codable {
        let error: String
        let error_description: String
    }

    func run() async throws {
        let device = DeviceAuthorizationBody(
            device_code: String(repeating: "d", count: 56), user_code: "BCDF-GHJK", verification_uri: "https://auth.example.com/device",
            verification_uri_complete: "https://auth.example.com/device?user_code=BCDF-GHJK", expires_in: 600, interval: 5)
        let token = TokenBody(
            access_token: String(repeating: "t", count: 600), token_type: "Bearer", expires_in: 3600, scope: "profile email",
            refresh_token: String(repeating: "r", count: 84))
        let error = ErrorBody(error: "authorization_pending", error_description: "the user has not yet approved the request")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let cases: [(String, () throws -> [UInt8], () -> [UInt8])] = [
            (
                "device_authorization", { Array(try encoder.encode(device)) },
                {
                    FlatJSONWriter.encode([
                        "device_code": device.device_code, "user_code": device.user_code, "verification_uri": device.verification_uri,
                        "verification_uri_complete": device.verification_uri_complete, "expires_in": device.expires_in, "interval": device.interval,
                    ])
                }
            ),
            (
                "token", { Array(try encoder.encode(token)) },
                {
                    FlatJSONWriter.encode([
                        "access_token": token.access_token, "token_type": token.token_type, "expires_in": token.expires_in, "scope": token.scope,
                        "refresh_token": token.refresh_token,
                    ])
                }
            ),
            ("error", { Array(try encoder.encode(error)) }, { FlatJSONWriter.encode(["error": error.error, "error_description": error.error_description]) }),
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
                    "ours: Codable struct through JSONEncoder; baseline: the former flat-object writer over [String: Any]; same \(writer().count) bytes; \(iterations) encodings × \(rounds) rounds, medians; lower is better"
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
