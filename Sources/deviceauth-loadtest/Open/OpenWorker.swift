import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import RedisClient

/// Endpoints of the open model, in report order.
enum OpenEndpoint: Int, CaseIterable, Sendable {
    case issue, poll, form, lookup, decide, probe

    var name: String {
        switch self {
        case .issue: "POST /oauth/device_authorization"
        case .poll: "POST /oauth/token"
        case .form: "GET /device"
        case .lookup: "POST /device lookup"
        case .decide: "POST /device"
        case .probe: "POST /oauth/token (after token)"
        }
    }
}

/// Settings shared by every worker of an open-model run.
struct OpenSettings: Sendable {
    var nodes: [(host: String, port: Int)]
    var schedule: ArrivalSchedule
    var mix: ScenarioMix
    var delay: DecisionDelay
    var clients: [Scenario: String]
    var userHeader: String
    var seed: UInt64
    var connectionsPerNode: Int
    var sourceAddresses: [String]
    var timeout: TimeAmount
    /// Seconds after the last arrival that devices still waiting may take to finish.
    var drainSeconds: Double
    var timelineSeconds: Int
    var workers: Int
}

/// Bounded-memory invariant counters (no per-device history).
struct OpenCounters: Sendable, Codable, Equatable {
    var arrivals = 0
    var issued = 0
    var issueFailures = 0
    var approvedDecisions = 0
    var deniedDecisions = 0
    var decisionFailures = 0
    var tokens = 0
    var tokensWrongSubject = 0
    var tokensUnexpected = 0
    var approvedWithoutToken = 0
    var secondTokens = 0
    var probesInvalidGrant = 0
    /// Probes answered with the device's own token again (the server's retry window): not a replay.
    var probesSameToken = 0
    var probesOther = 0
    var deniedOK = 0
    var deniedWrong = 0
    var abandonedExpired = 0
    var abandonedWrong = 0
    var expiredBeforeDecision = 0
    var slowDownExact = 0
    var slowDownWrong = 0
    var slowDownMissing = 0
    var pollErrors = 0
    var requests = 0
    var errors = 0
    var polls = 0
    var finished = 0
    var unfinished = 0

    mutating func add(_ other: OpenCounters) {
        arrivals += other.arrivals
        issued += other.issued
        issueFailures += other.issueFailures
        approvedDecisions += other.approvedDecisions
        deniedDecisions += other.deniedDecisions
        decisionFailures += other.decisionFailures
        tokens += other.tokens
        tokensWrongSubject += other.tokensWrongSubject
        tokensUnexpected += other.tokensUnexpected
        approvedWithoutToken += other.approvedWithoutToken
        secondTokens += other.secondTokens
        probesInvalidGrant += other.probesInvalidGrant
        probesSameToken += other.probesSameToken
        probesOther += other.probesOther
        deniedOK += other.deniedOK
        deniedWrong += other.deniedWrong
        abandonedExpired += other.abandonedExpired
        abandonedWrong += other.abandonedWrong
        expiredBeforeDecision += other.expiredBeforeDecision
        slowDownExact += other.slowDownExact
        slowDownWrong += other.slowDownWrong
        slowDownMissing += other.slowDownMissing
        pollErrors += other.pollErrors
        requests += other.requests
        errors += other.errors
        polls += other.polls
        finished += other.finished
        unfinished += other.unfinished
    }
}

/// One period of the timeline.
struct TimelineBucket: Sendable, Codable {
    var arrivals = 0
    var polls = 0
    var requests = 0
    var errors = 0
    var approved = 0
    var denied = 0
    var expired = 0
    var failed = 0
    /// Devices waiting at the end of the period (max over the period).
    var waiting = 0
    var latency: [CoarseHistogram] = Array(repeating: CoarseHistogram(), count: OpenEndpoint.allCases.count)

    mutating func add(_ other: TimelineBucket) {
        arrivals += other.arrivals
        polls += other.polls
        requests += other.requests
        errors += other.errors
        approved += other.approved
        denied += other.denied
        expired += other.expired
        failed += other.failed
        waiting += other.waiting
        for index in latency.indices { latency[index].add(other.latency[index]) }
    }
}

/// What a worker hands back at the end.
struct WorkerResult: Sendable {
    var counters: OpenCounters
    var histograms: [MetricKey: Histogram<UInt64>]
    var lag: Histogram<UInt64>
    var timeline: [TimelineBucket]
    var peakWaiting: Int
}

/// Live figures for the progress line and `--find-max`.
struct WorkerSnapshot: Sendable {
    var counters: OpenCounters
    var waiting: Int
    var queued: Int
    var connections: Int
    /// Per arrival step: token-poll latency (corrected), requests, errors, polls.
    var steps: [StepTally]
}

struct StepTally: Sendable {
    var poll = CoarseHistogram()
    var requests = 0
    var errors = 0
    var polls = 0
    var peakWaiting = 0

    mutating func add(_ other: StepTally) {
        poll.add(other.poll)
        requests += other.requests
        errors += other.errors
        polls += other.polls
        peakWaiting += other.peakWaiting
    }
}

/// A waiting device: a small record in a slot table; its next action is a ``DueEntry`` in the heap.
struct DeviceSlot {
    var deviceCode = ""
    var userCode = ""
    var id: UInt32 = 0
    var generation: UInt16 = 0
    var interval: UInt16 = 5
    var scenario = Scenario.approve
    var live = false
    var fastPollDone = false
    var decided = false
    var slowDownSeen = false
}

/// One worker: an event loop that owns a share of the devices (arrival k goes to worker k mod W), their
/// due-time heap, a connection pool per node and its own statistics. Everything runs on that loop, so
/// nothing is locked and no task is suspended per device.
final class OpenWorker: @unchecked Sendable {
    let index: Int
    let loop: any EventLoop
    let settings: OpenSettings
    let start: NIODeadline
    var pools: [LeanPool] = []
    var slots: [DeviceSlot] = []
    var free: [UInt32] = []
    var heap = DueHeap()
    var nextArrival: Int
    /// When arrival `nextArrival` is due (seconds), nil after the schedule's last.
    var nextArrivalDue: Double?
    var rng: SplitMix64
    var counters = OpenCounters()
    var histograms: [MetricKey: Histogram<UInt64>] = [:]
    var lag = Histogram<UInt64>(highestTrackableValue: Recorder.highestTrackableMicroseconds, numberOfSignificantValueDigits: .two)
    var timeline: [TimelineBucket] = []
    var steps: [StepTally] = []
    var live = 0
    var peakWaiting = 0
    var stopAt: Int64?
    var done: EventLoopPromise<WorkerResult>?
    var tickTask: Scheduled<Void>?

    init(index: Int, loop: any EventLoop, settings: OpenSettings, start: NIODeadline) {
        self.index = index
        self.loop = loop
        self.settings = settings
        self.start = start
        self.nextArrival = index
        self.nextArrivalDue = settings.schedule.arrivalTime(of: index)
        self.rng = SplitMix64(seed: settings.seed &+ UInt64(index) &* 0x5851_F42D_4C95_7F2D)
    }

    /// Starts the worker; the future completes when its devices are done (or the drain time is over).
    func run() -> EventLoopFuture<WorkerResult> {
        let promise = loop.makePromise(of: WorkerResult.self)
        loop.execute { [self] in
            done = promise
            let perNode = max(1, settings.connectionsPerNode / settings.workers)
            pools = settings.nodes.map {
                LeanPool(
                    eventLoop: loop, host: $0.host, port: $0.port, maxConnections: perNode, sourceAddresses: settings.sourceAddresses,
                    timeout: settings.timeout)
            }
            tick()
        }
        return promise.futureResult
    }

    /// Stops arrivals and waiting at once (find-max broke, or Ctrl-C).
    func stop() {
        loop.execute { [self] in stopAt = now() }
    }

    func snapshot() -> EventLoopFuture<WorkerSnapshot> {
        loop.submit { [self] in
            WorkerSnapshot(
                counters: counters, waiting: live, queued: pools.reduce(0) { $0 + $1.queued },
                connections: pools.reduce(0) { $0 + $1.connections }, steps: steps)
        }
    }

    func now() -> Int64 { (NIODeadline.now() - start).nanoseconds }

    // MARK: - Scheduling

    func tick() {
        let now = now()
        let seconds = Double(now) / 1e9
        // Every arrival of the schedule is made, late ones included (a late tick must not drop the last devices).
        if stopAt == nil {
            while let due = nextArrivalDue, due <= seconds {
                arrive(id: nextArrival, intended: Int64(due * 1e9))
                nextArrival += settings.workers
                nextArrivalDue = settings.schedule.arrivalTime(of: nextArrival)
            }
        }
        let arrivalsOver = stopAt != nil || nextArrivalDue == nil
        let stopped = stopAt.map { now >= $0 } ?? false
        let drainOver = seconds >= settings.schedule.seconds + settings.drainSeconds
        if stopped || (arrivalsOver && (live == 0 || drainOver)) {
            finish()
            return
        }
        while let entry = heap.popDue(now: now) {
            guard Int(entry.slot) < slots.count, slots[Int(entry.slot)].live, slots[Int(entry.slot)].generation == entry.generation else { continue }
            lag.record(UInt64(max(1, (now - entry.due) / 1000)))
            switch entry.kind {
            case .poll: poll(slot: entry.slot, intended: entry.due)
            case .person: person(slot: entry.slot, intended: entry.due)
            }
        }
        let period = bucket(now)
        timeline[period].waiting = max(timeline[period].waiting, live)
        // Sleep until the next due action or arrival (at most 50 ms, for the stop checks), not a fixed 1 ms tick:
        // an idle worker must not spend its CPU waking up.
        var wake = now + 50_000_000
        if let due = heap.next?.due { wake = min(wake, due) }
        if stopAt == nil, let arrival = nextArrivalDue { wake = min(wake, Int64(arrival * 1e9)) }
        tickTask = loop.scheduleTask(deadline: start + .nanoseconds(max(wake, now + 100_000))) { [self] in tick() }
    }

    func finish() {
        counters.unfinished = live
        done?.succeed(WorkerResult(counters: counters, histograms: histograms, lag: lag, timeline: timeline, peakWaiting: peakWaiting))
        done = nil
    }

    func bucketIndex(_ nanos: Int64) -> Int { max(0, Int(nanos / 1_000_000_000) / max(1, settings.timelineSeconds)) }

    /// The timeline index for an instant, the timeline grown to hold it.
    func bucket(_ nanos: Int64) -> Int {
        let index = bucketIndex(nanos)
        while timeline.count <= index { timeline.append(TimelineBucket()) }
        return index
    }

    func step(_ nanos: Int64) -> Int {
        let index = settings.schedule.stepIndex(at: Double(nanos) / 1e9)
        while steps.count <= index { steps.append(StepTally()) }
        return index
    }

    func allocate() -> UInt32 {
        if let slot = free.popLast() { return slot }
        slots.append(DeviceSlot())
        return UInt32(slots.count - 1)
    }

    func release(_ slot: UInt32) {
        slots[Int(slot)].live = false
        slots[Int(slot)].deviceCode = ""
        slots[Int(slot)].userCode = ""
        slots[Int(slot)].generation &+= 1
        free.append(slot)
        live -= 1
        counters.finished += 1
    }

    func schedule(_ kind: DueEntry.Kind, slot: UInt32, at due: Int64) {
        heap.push(DueEntry(due: due, slot: slot, generation: slots[Int(slot)].generation, kind: kind))
    }

    // MARK: - Requests

    /// Sends one request with its intended time; `then` gets the answer (nil after a transport error).
    func send(
        _ endpoint: OpenEndpoint, intended: Int64, request: LeanRequest,
        classify: @escaping (LeanResponse) -> String, then: @escaping (LeanResponse?, Int64) -> Void
    ) {
        let node = settings.nodes.count == 1 ? 0 : Int(rng.next() % UInt64(settings.nodes.count))
        let sent = now()
        pools[node].send(request) { [self] result in
            let completed = now()
            let timing = RequestTiming(intended: intended, sent: sent, completed: completed)
            let outcome: String
            var response: LeanResponse?
            var isError = false
            switch result {
            case .success(let answer):
                response = answer
                outcome = classify(answer)
                isError = answer.status >= 500
            case .failure(let error):
                outcome = error.code == .connectFailed ? "transport_error (not sent)" : "transport_error"
                isError = true
            }
            record(endpoint, outcome: outcome, timing: timing, isError: isError)
            then(response, completed)
        }
    }

    func record(_ endpoint: OpenEndpoint, outcome: String, timing: RequestTiming, isError: Bool) {
        let micros = UInt64(clamping: max(1, timing.correctedNanoseconds / 1000))
        let value = min(micros, Recorder.highestTrackableMicroseconds)
        let key = MetricKey(endpoint: endpoint.name, outcome: outcome)
        if histograms[key] == nil {
            histograms[key] = Histogram<UInt64>(highestTrackableValue: Recorder.highestTrackableMicroseconds, numberOfSignificantValueDigits: .three)
        }
        histograms[key]!.record(value)
        let period = bucket(timing.completed)
        timeline[period].requests += 1
        timeline[period].latency[endpoint.rawValue].record(micros: value)
        counters.requests += 1
        let stepIndex = step(timing.intended)
        steps[stepIndex].requests += 1
        if isError {
            counters.errors += 1
            timeline[period].errors += 1
            steps[stepIndex].errors += 1
        }
        if endpoint == .poll {
            counters.polls += 1
            timeline[period].polls += 1
            steps[stepIndex].polls += 1
            steps[stepIndex].poll.record(micros: value)
        }
    }

    func tokenRequest(_ slot: DeviceSlot) -> LeanRequest {
        LeanRequest(
            method: .POST, path: "/oauth/token",
            form: "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=" + FormEncoding.escape(slot.deviceCode)
                + "&client_id=" + FormEncoding.escape(settings.clients[slot.scenario] ?? "loadtest"))
    }

    static func errorLabel(_ response: LeanResponse) -> String {
        if response.status == 200 { return "200 token" }
        return "\(response.status) \(LeanJSON.string("error", in: response.body) ?? "?")"
    }

}
