import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A response reduced to what the simulation reads.
struct SimpleResponse: Sendable {
    var status: Int
    var headers: [(String, String)]
    var body: String

    func header(_ name: String) -> [String] {
        headers.filter { $0.0.caseInsensitiveCompare(name) == .orderedSame }.map(\.1)
    }

    /// The body as a JSON object, when it is one.
    var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
    }
}

/// Sends requests to the API nodes, a random node per request, timing each one into the recorder.
struct NodeClient: Sendable {
    let http: HTTPClient
    let nodes: [String]
    let recorder: Recorder
    let timeout: TimeAmount

    /// Picks a node with the device's own generator, so one device's requests spread over all nodes.
    func pickNode(_ rng: inout SplitMix64) -> String {
        nodes[Int(rng.next() % UInt64(nodes.count))]
    }

    /// Sends one request; classifies the outcome with `classify` and records the latency under `endpoint`.
    /// - Returns: the response, or `nil` after a transport error (recorded as outcome `transport_error`).
    func send(endpoint: String, method: HTTPMethod, url: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
              classify: (SimpleResponse) -> String) async -> SimpleResponse? {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let form {
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
        }
        let began = ContinuousClock.now
        do {
            let response = try await http.execute(request, timeout: timeout)
            let buffer = try await response.body.collect(upTo: 4 << 20)
            let simple = SimpleResponse(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                                        body: String(buffer: buffer))
            let outcome = classify(simple)
            recorder.record(MetricKey(endpoint: endpoint, outcome: outcome), latency: .now - began, isError: simple.status >= 500)
            return simple
        } catch {
            recorder.record(MetricKey(endpoint: endpoint, outcome: "transport_error"), latency: .now - began, isError: true)
            return nil
        }
    }
}

/// `application/x-www-form-urlencoded` encoding.
enum FormEncoding {
    private static let allowed: CharacterSet = {
        var set = CharacterSet.alphanumerics
        set.insert(charactersIn: "-._*")
        return set
    }()

    static func escape(_ value: String) -> String {
        (value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value)
    }

    static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }
}

/// A small, fast, seedable generator (deterministic scenario assignment and node choice).
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
