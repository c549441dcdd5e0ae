import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import RedisClient
import Testing

@testable import deviceauth_loadtest

/// The open model's parts without a clock: heap, schedules, sampling, coordinated-omission correction, find-max.
@Suite("Load harness v2: scheduling")
struct LoadTestHarnessSchedulingTests {
    @Test("the due heap pops entries in due order, equal times included")
    func heapOrder() {
        var heap = DueHeap()
        var rng = SplitMix64(seed: 7)
        var dues: [Int64] = []
        for slot in 0..<5000 {
            let due = Int64(rng.next() % 1000)
            dues.append(due)
            heap.push(DueEntry(due: due, slot: UInt32(slot), generation: 0, kind: .poll))
        }
        var popped: [Int64] = []
        while let entry = heap.pop() { popped.append(entry.due) }
        #expect(popped == dues.sorted())
        #expect(MemoryLayout<DueEntry>.stride == 16)
    }

    @Test("popDue returns only entries that are due")
    func popDue() {
        var heap = DueHeap()
        heap.push(DueEntry(due: 50, slot: 1, generation: 0, kind: .person))
        heap.push(DueEntry(due: 10, slot: 2, generation: 0, kind: .poll))
        #expect(heap.popDue(now: 5) == nil)
        #expect(heap.popDue(now: 10)?.slot == 2)
        #expect(heap.popDue(now: 49) == nil)
        #expect(heap.popDue(now: 100)?.slot == 1)
        #expect(heap.isEmpty)
    }

    @Test("a constant rate spaces arrivals evenly and stops at the end")
    func constant() throws {
        let schedule = ArrivalSchedule.constant(rate: 10, seconds: 3)
        #expect(schedule.arrivals(by: 1) == 10)
        #expect(schedule.arrivals(by: 99) == 30)
        let first = try #require(schedule.arrivalTime(of: 0))
        #expect(abs(first - 0.1) < 1e-6)
        #expect(abs(try #require(schedule.arrivalTime(of: 29)) - 3) < 1e-6)
        #expect(schedule.arrivalTime(of: 30) == nil)
    }

    @Test("a ramp integrates its rate; steps add up their segments")
    func rampAndSteps() throws {
        let ramp = ArrivalSchedule.ramp(from: 0, to: 100, seconds: 10)
        #expect(ramp.arrivals(by: 10) == 500)
        #expect(ramp.arrivals(by: 5) == 125)
        #expect(abs(ramp.rate(at: 5) - 50) < 1e-9)
        let steps = try #require(ArrivalSchedule.parseSteps("10:2,50:1"))
        let schedule = ArrivalSchedule.steps(steps)
        #expect(schedule.seconds == 3)
        #expect(schedule.arrivals(by: 2) == 20)
        #expect(schedule.arrivals(by: 3) == 70)
        #expect(schedule.stepIndex(at: 2.5) == 1)
        #expect(ArrivalSchedule.parseSteps("10") == nil)
        let ramp2 = try #require(ArrivalSchedule.parseRamp("5-50"))
        #expect(ramp2.0 == 5 && ramp2.1 == 50)
        #expect(ArrivalSchedule.parseRate("40/s") == 40)
    }

    @Test("log-normal delays: seeded, median near the median, clamped")
    func logNormal() {
        let delay = DecisionDelay.standard
        var rng = SplitMix64(seed: 42)
        var samples = (0..<20_000).map { _ in delay.sample(&rng) }
        var again = SplitMix64(seed: 42)
        #expect(delay.sample(&again) == samples[0])
        #expect(samples.allSatisfy { $0 >= 5 && $0 <= 120 })
        samples.sort()
        let median = samples[samples.count / 2]
        #expect(median > 19 && median < 21, "median \(median)")
        #expect(DecisionDelay(parsing: "0.2-2") == .uniform(minimum: 0.2, maximum: 2))
        #expect(DecisionDelay(parsing: "lognormal:30:0.5:10-60") == .logNormal(median: 30, sigma: 0.5, minimum: 10, maximum: 60))
        #expect(DecisionDelay(parsing: "2-1") == nil)
    }

    @Test("latency is counted from the intended send time; the lag is the harness's own lateness")
    func coordinatedOmission() {
        // Due at 1.000 s, the harness sent at 1.250 s (busy), the answer came at 1.260 s.
        let timing = RequestTiming(intended: 1_000_000_000, sent: 1_250_000_000, completed: 1_260_000_000)
        #expect(timing.correctedNanoseconds == 260_000_000)
        #expect(timing.serviceNanoseconds == 10_000_000)
        #expect(timing.lagNanoseconds == 250_000_000)
    }

    @Test("coarse histogram percentiles are within a bucket (4.4 %)")
    func coarse() {
        var histogram = CoarseHistogram()
        for micros in 1...10_000 { histogram.record(micros: UInt64(micros)) }
        let p99 = histogram.percentileMs(99)
        #expect(p99 >= 9.9 && p99 <= 9.9 * 1.05, "\(p99)")
        var other = CoarseHistogram()
        other.record(micros: 1_000_000)
        histogram.add(other)
        #expect(histogram.total == 10_001)
        #expect(histogram.percentileMs(100) >= 1000)
    }

    @Test("find-max: the knee is the last step meeting both objectives")
    func knee() {
        func step(_ rate: Double, _ p99: Double, errors: UInt64 = 0) -> FindMax.StepResult {
            FindMax.StepResult(arrivalRate: rate, requests: 1000, errors: errors, p99Ms: p99, pollsPerSecond: rate * 4, waitingDevices: Int(rate) * 10)
        }
        let knee = FindMax.knee([step(10, 5), step(20, 8), step(30, 60), step(40, 5)], maxP99Ms: 50, maxErrorRate: 0.01)
        #expect(knee.arrivalRate == 20)
        #expect(knee.brokeAt == 30)
        #expect(knee.reason?.contains("p99") == true)
        let errors = FindMax.knee([step(10, 5), step(20, 5, errors: 20)], maxP99Ms: 50, maxErrorRate: 0.01)
        #expect(errors.arrivalRate == 10 && errors.reason?.contains("error rate") == true)
        let none = FindMax.knee([step(10, 99)], maxP99Ms: 50, maxErrorRate: 0.01)
        #expect(none.arrivalRate == nil && none.brokeAt == 10)
        #expect(FindMax.schedule(start: 20, step: 20, seconds: 5, maximum: 100).map(\.rate) == [20, 40, 60, 80, 100])
    }

    @Test("the invariants fail on a second token, a wrong subject, a wrong slow_down and uncounted replays")
    func counterInvariants() {
        var honest = OpenCounters()
        honest.approvedDecisions = 3
        honest.tokens = 3
        honest.probesInvalidGrant = 3
        honest.deniedDecisions = 1
        honest.deniedOK = 1
        honest.abandonedExpired = 2
        honest.slowDownExact = 1
        func failed(_ counters: OpenCounters, replayed: Double = 3) -> [String] {
            OpenModelRun.invariants(counters, replayedBefore: [0: 0], replayedAfter: [0: replayed], nodes: 1).filter { !$0.passed }.map(\.name)
        }
        #expect(failed(honest).isEmpty)
        var broken = honest
        broken.secondTokens = 1
        #expect(failed(broken).count == 1)
        broken = honest
        broken.tokensWrongSubject = 1
        #expect(failed(broken).count == 1)
        broken = honest
        broken.slowDownWrong = 1
        #expect(failed(broken).first?.contains("slow_down") == true)
        #expect(failed(honest, replayed: 4).first?.contains("redeemed twice") == true)
        broken = honest
        broken.abandonedWrong = 1
        #expect(failed(broken).first?.contains("abandoned") == true)
    }

    @Test("the JSON scanner reads the fields a poll needs")
    func json() {
        let body = ByteBuffer(string: #"{"device_code":"abc.def_1","user_code":"WDJB-MJHT","interval": 5,"expires_in":300,"verification_uri":"http:\/\/x"}"#)
        #expect(LeanJSON.string("device_code", in: body) == "abc.def_1")
        #expect(LeanJSON.int("interval", in: body) == 5)
        #expect(LeanJSON.int("expires_in", in: body) == 300)
        #expect(LeanJSON.string("verification_uri", in: body) == "http://x")
        #expect(LeanJSON.string("error", in: body) == nil)
    }
}

/// The lean HTTP/1.1 client: framing against a tiny real NIO server, protocol against a real deviceauth-server.
@Suite("Load harness v2: lean HTTP client")
struct LoadTestHarnessHTTPClientTests {
    /// Answers every request with its path and body echoed, `Connection: close` when the path says so.
    final class Answer: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var path = ""
        var body = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                path = head.uri
                body = ""
            case .body(let buffer): body += String(buffer: buffer)
            case .end:
                var headers = HTTPHeaders()
                let text = "\(path)|\(body)"
                if path == "/close" { headers.add(name: "Connection", value: "close") }
                headers.add(name: "Content-Length", value: "\(text.utf8.count)")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                let close = path == "/close"
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in if close { context.close(promise: nil) } }
            }
        }
    }

    static func send(_ pool: LeanPool, _ request: LeanRequest) async -> Result<LeanResponse, LeanHTTPError> {
        let promise = pool.eventLoop.makePromise(of: Result<LeanResponse, LeanHTTPError>.self)
        pool.eventLoop.execute { pool.send(request) { promise.succeed($0) } }
        return try! await promise.futureResult.get()
    }

    @Test("keep-alive reuses one connection; Connection: close opens a new one; bodies arrive whole")
    func framing() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Answer())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let loop = group.next()
        let pool = try await loop.submit {
            LeanPool(eventLoop: loop, host: "127.0.0.1", port: port, maxConnections: 1, sourceAddresses: ["127.0.0.1"], timeout: .seconds(60))
        }.get()
        for index in 0..<20 {
            let result = await Self.send(pool, LeanRequest(method: .POST, path: "/p\(index)", form: "a=\(index)"))
            #expect((try? result.get().bodyString) == "/p\(index)|a=\(index)")
        }
        #expect(try await loop.submit { pool.connections }.get() == 1)
        let closed = await Self.send(pool, LeanRequest(method: .GET, path: "/close"))
        #expect((try? closed.get().status) == 200)
        let after = await Self.send(pool, LeanRequest(method: .GET, path: "/again"))
        #expect((try? after.get().bodyString) == "/again|")
        try await server.close()
        try await group.shutdownGracefully()
    }

    /// Starts one real node (deploy/local-cluster.sh: Redis + deviceauth-server) and returns its URL and a stop function.
    static func startNode() async throws -> (host: String, port: Int, stop: () async -> Void)? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let build = ProcessInfo.processInfo.environment["LOADTEST_BUILD_DIR"] ?? root.appendingPathComponent(".build/debug").path
        guard FileManager.default.isExecutableFile(atPath: build + "/deviceauth-server") else { return nil }
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("lean-client-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: marker.path + ".hold", contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.currentDirectoryURL = root
        // The node stops itself after 300 s even if the test never says so.
        process.arguments = [
            "timeout", "300", "deploy/local-cluster.sh", "--nodes", "1", "--build", build, "--", "/bin/sh", "-c",
            "echo \"$NODE_URLS\" > '\(marker.path)'; while [ -e '\(marker.path).hold' ]; do sleep 0.2; done",
        ]
        let ended = AsyncStream<Int32>.makeStream()
        process.terminationHandler = {
            ended.continuation.yield($0.terminationStatus)
            ended.continuation.finish()
        }
        try process.run()
        for _ in 0..<1200 where !FileManager.default.fileExists(atPath: marker.path) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let text = try String(contentsOf: marker, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let url = try #require(URL(string: text))
        return (
            "127.0.0.1", try #require(url.port),
            {
                try? FileManager.default.removeItem(atPath: marker.path + ".hold")
                for await _ in ended.stream {}
                try? FileManager.default.removeItem(at: marker)
            }
        )
    }

    @Test("against a real node: codes, authorization_pending, slow_down +5 s on one kept-alive connection")
    func realServer() async throws {
        guard let node = try await Self.startNode() else {
            Issue.record("no deviceauth-server build (swift build --product deviceauth-server) for the protocol test")
            return
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let pool = try await loop.submit {
            LeanPool(eventLoop: loop, host: node.host, port: node.port, maxConnections: 1, sourceAddresses: ["127.0.0.1"], timeout: .seconds(60))
        }.get()
        let issued = try await Self.send(pool, LeanRequest(method: .POST, path: "/oauth/device_authorization", form: "client_id=loadtest-open")).get()
        #expect(issued.status == 200)
        let code = try #require(LeanJSON.string("device_code", in: issued.body))
        #expect(LeanJSON.int("interval", in: issued.body) == 5)
        let form = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=\(FormEncoding.escape(code))&client_id=loadtest-open"
        let first = try await Self.send(pool, LeanRequest(method: .POST, path: "/oauth/token", form: form)).get()
        #expect(first.status == 400)
        #expect(LeanJSON.string("error", in: first.body) == "authorization_pending")
        let fast = try await Self.send(pool, LeanRequest(method: .POST, path: "/oauth/token", form: form)).get()
        #expect(LeanJSON.string("error", in: fast.body) == "slow_down")
        #expect(LeanJSON.int("interval", in: fast.body) == 10)
        #expect(try await loop.submit { pool.connections }.get() == 1)
        try await group.shutdownGracefully()
        await node.stop()
    }
}
