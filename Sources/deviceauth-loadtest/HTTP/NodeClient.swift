import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RedisClient
import Synchronization

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

/// How a request failed before any HTTP answer came back.
enum TransportFailure: Sendable, Equatable {
    /// The connection could not be made (refused, connect timeout): no server saw the request,
    /// so sending it to another node is always safe.
    case notSent(String)
    /// The connection broke or timed out after the request was written: a server may have acted on it.
    case ambiguous(String)

    var message: String {
        switch self {
        case .notSent(let text): "not sent: \(text)"
        case .ambiguous(let text): "no answer: \(text)"
        }
    }
}

/// The answer to one request: a response, or how the transport failed.
enum SendOutcome: Sendable {
    case response(SimpleResponse)
    case failed(TransportFailure)

    var response: SimpleResponse? {
        if case .response(let response) = self { return response }
        return nil
    }
}

/// Sends requests to the API nodes, a random node per request, timing each one into the recorder.
///
/// With failover on, a node whose connection failed is avoided for a few seconds (the passive
/// health check of a load balancer), and every fault seen (a `503`, a transport error) is
/// timestamped in ``FaultLog`` so the invariants can tell writes lost by a fault from bugs.
struct NodeClient: Sendable {
    let http: HTTPClient
    let nodes: [String]
    let recorder: Recorder
    let timeout: TimeAmount
    let faults: FaultLog
    /// How long a node that failed a connection is avoided.
    var ejectFor: Duration = .seconds(3)

    init(http: HTTPClient, nodes: [String], recorder: Recorder, timeout: TimeAmount, faults: FaultLog = FaultLog()) {
        self.http = http
        self.nodes = nodes
        self.recorder = recorder
        self.timeout = timeout
        self.faults = faults
    }

    /// Picks a node with the device's own generator, so one device's requests spread over all nodes.
    /// Nodes ejected after a connection failure are skipped while others are left.
    func pickNode(_ rng: inout SplitMix64, avoiding avoided: String? = nil) -> String {
        let pick = rng.next()
        let healthy = faults.healthyNodes(nodes, now: .now).filter { $0 != avoided }
        let candidates = healthy.isEmpty ? nodes.filter { $0 != avoided } : healthy
        let pool = candidates.isEmpty ? nodes : candidates
        return pool[Int(pick % UInt64(pool.count))]
    }

    /// Sends one request; classifies the outcome with `classify` and records the latency under `endpoint`.
    /// - Returns: the response, or `nil` after a transport error (recorded as outcome `transport_error`).
    func send(
        endpoint: String, method: HTTPMethod, url: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
        classify: (SimpleResponse) -> String
    ) async -> SimpleResponse? {
        await sendDetailed(endpoint: endpoint, method: method, url: url, headers: headers, form: form, classify: classify).response
    }

    /// `send`, telling a request that never reached a server from one whose answer was lost.
    func sendDetailed(
        endpoint: String, method: HTTPMethod, url: String, headers: [(String, String)] = [], form: [(String, String)]? = nil,
        classify: (SimpleResponse) -> String
    ) async -> SendOutcome {
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
            let simple = SimpleResponse(
                status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                body: String(buffer: buffer))
            let outcome = classify(simple)
            recorder.record(MetricKey(endpoint: endpoint, outcome: outcome), latency: .now - began, isError: simple.status >= 500)
            if simple.status >= 500 { faults.record(.now) }
            return .response(simple)
        } catch {
            let failure = Self.classify(error)
            let node = nodes.firstIndex(where: { url.hasPrefix($0 + "/") })
            var label = if case .notSent = failure { "transport_error (not sent)" } else { "transport_error" }
            // Which node failed, so a report can tell a killed node from one shutting down gracefully.
            if let node, nodes.count > 1 { label += " node \(node + 1)" }
            recorder.record(MetricKey(endpoint: endpoint, outcome: label), latency: .now - began, isError: true)
            faults.record(.now)
            if let node { faults.eject(nodes[node], until: .now + ejectFor) }
            return .failed(failure)
        }
    }

    /// Whether the request can have reached a server: connect failures cannot.
    static func classify(_ error: any Error) -> TransportFailure {
        let text = String(describing: error)
        if let error = error as? HTTPClientError {
            if error == .connectTimeout || error == .getConnectionFromPoolTimeout { return .notSent(text) }
            return .ambiguous(text)
        }
        let lowered = text.lowercased()
        if lowered.contains("refused") || lowered.contains("connect") || lowered.contains("unreachable") { return .notSent(text) }
        return .ambiguous(text)
    }
}

/// When the harness saw faults (`5xx`, transport errors) and which nodes it is avoiding.
final class FaultLog: Sendable {
    private struct State {
        var instants: [ContinuousClock.Instant] = []
        var ejected: [String: ContinuousClock.Instant] = [:]
    }
    private let state = Mutex(State())

    func record(_ instant: ContinuousClock.Instant) {
        state.withLock { $0.instants.append(instant) }
    }

    func eject(_ node: String, until: ContinuousClock.Instant) {
        state.withLock { $0.ejected[node] = until }
    }

    func healthyNodes(_ nodes: [String], now: ContinuousClock.Instant) -> [String] {
        state.withLock { state in nodes.filter { (state.ejected[$0] ?? now) <= now } }
    }

    /// Whether a fault was seen within `window` after `instant` (or just before it, by `slack`).
    func faultSeen(after instant: ContinuousClock.Instant, within window: Duration, slack: Duration = .milliseconds(500)) -> Bool {
        state.withLock { state in state.instants.contains { $0 >= instant - slack && $0 <= instant + window } }
    }

    var count: Int { state.withLock { $0.instants.count } }
}

/// `application/x-www-form-urlencoded` encoding.
enum FormEncoding {
    private static let allowed: CharacterSet = {
        var set = CharacterSet.alphanumerics
        set.insert(charactersIn: "-._*")
        return set
    }()

    static func escape(_ value: String) -> String {
        // Device codes, ids and tokens are plain ASCII: nothing to escape, and no trip through
        // Foundation (which was a tenth of the open model's CPU per request).
        if value.utf8.allSatisfy(isPlain) { return value }
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }

    /// ASCII letters, digits and `-._*`: bytes `escape` leaves alone (all are in `allowed`).
    private static func isPlain(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "*"):
            true
        default: false
        }
    }

    static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }
}
