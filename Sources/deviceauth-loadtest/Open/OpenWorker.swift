import RedisClient
import Foundation
import Histogram
import NIOCore
import NIOHTTP1

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
        arrivals += other.arrivals; issued += other.issued; issueFailures += other.issueFailures
        approvedDecisions += other.approvedDecisions; deniedDecisions += other.deniedDecisions; decisionFailures += other.decisionFailures
        tokens += other.tokens; tokensWrongSubject += other.tokensWrongSubject; tokensUnexpected += other.tokensUnexpected
        approvedWithoutToken += other.approvedWithoutToken; secondTokens += other.secondTokens
        probesInvalidGrant += other.probesInvalidGrant; probesSameToken += other.probesSameToken; probesOther += other.probesOther
        deniedOK += other.deniedOK; deniedWrong += other.deniedWrong; abandonedExpired += other.abandonedExpired
        abandonedWrong += other.abandonedWrong; expiredBeforeDecision += other.expiredBeforeDecision
        slowDownExact += other.slowDownExact; slowDownWrong += other.slowDownWrong; slowDownMissing += other.slowDownMissing
        pollErrors += other.pollErrors; requests += other.requests; errors += other.errors; polls += other.polls
        finished += other.finished; unfinished += other.unfinished
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
        arrivals += other.arrivals; polls += other.polls; requests += other.requests; errors += other.errors
        approved += other.approved; denied += other.denied; expired += other.expired; failed += other.failed
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
        poll.add(other.poll); requests += other.requests; errors += other.errors; polls += other.polls
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
    private let start: NIODeadline
    private var pools: [LeanPool] = []
    private var slots: [DeviceSlot] = []
    private var free: [UInt32] = []
    private var heap = DueHeap()
    private var nextArrival: Int
    /// When arrival `nextArrival` is due (seconds), nil after the schedule's last.
    private var nextArrivalDue: Double?
    private var rng: SplitMix64
    private var counters = OpenCounters()
    private var histograms: [MetricKey: Histogram<UInt64>] = [:]
    private var lag = Histogram<UInt64>(highestTrackableValue: Recorder.highestTrackableMicroseconds, numberOfSignificantValueDigits: .two)
    private var timeline: [TimelineBucket] = []
    private var steps: [StepTally] = []
    private var live = 0
    private var peakWaiting = 0
    private var stopAt: Int64?
    private var done: EventLoopPromise<WorkerResult>?
    private var tickTask: Scheduled<Void>?

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
                LeanPool(eventLoop: loop, host: $0.host, port: $0.port, maxConnections: perNode, sourceAddresses: settings.sourceAddresses,
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
            WorkerSnapshot(counters: counters, waiting: live, queued: pools.reduce(0) { $0 + $1.queued },
                           connections: pools.reduce(0) { $0 + $1.connections }, steps: steps)
        }
    }

    private func now() -> Int64 { (NIODeadline.now() - start).nanoseconds }

    // MARK: - Scheduling

    private func tick() {
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

    private func finish() {
        counters.unfinished = live
        done?.succeed(WorkerResult(counters: counters, histograms: histograms, lag: lag, timeline: timeline, peakWaiting: peakWaiting))
        done = nil
    }

    private func bucketIndex(_ nanos: Int64) -> Int { max(0, Int(nanos / 1_000_000_000) / max(1, settings.timelineSeconds)) }

    /// The timeline index for an instant, the timeline grown to hold it.
    private func bucket(_ nanos: Int64) -> Int {
        let index = bucketIndex(nanos)
        while timeline.count <= index { timeline.append(TimelineBucket()) }
        return index
    }

    private func step(_ nanos: Int64) -> Int {
        let index = settings.schedule.stepIndex(at: Double(nanos) / 1e9)
        while steps.count <= index { steps.append(StepTally()) }
        return index
    }

    private func allocate() -> UInt32 {
        if let slot = free.popLast() { return slot }
        slots.append(DeviceSlot())
        return UInt32(slots.count - 1)
    }

    private func release(_ slot: UInt32) {
        slots[Int(slot)].live = false
        slots[Int(slot)].deviceCode = ""
        slots[Int(slot)].userCode = ""
        slots[Int(slot)].generation &+= 1
        free.append(slot)
        live -= 1
        counters.finished += 1
    }

    private func schedule(_ kind: DueEntry.Kind, slot: UInt32, at due: Int64) {
        heap.push(DueEntry(due: due, slot: slot, generation: slots[Int(slot)].generation, kind: kind))
    }

    // MARK: - Requests

    /// Sends one request with its intended time; `then` gets the answer (nil after a transport error).
    private func send(_ endpoint: OpenEndpoint, intended: Int64, request: LeanRequest,
                      classify: @escaping (LeanResponse) -> String, then: @escaping (LeanResponse?, Int64) -> Void) {
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

    private func record(_ endpoint: OpenEndpoint, outcome: String, timing: RequestTiming, isError: Bool) {
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
        if isError { counters.errors += 1; timeline[period].errors += 1; steps[stepIndex].errors += 1 }
        if endpoint == .poll {
            counters.polls += 1
            timeline[period].polls += 1
            steps[stepIndex].polls += 1
            steps[stepIndex].poll.record(micros: value)
        }
    }

    private func tokenRequest(_ slot: DeviceSlot) -> LeanRequest {
        LeanRequest(method: .POST, path: "/oauth/token",
                    form: "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=" + FormEncoding.escape(slot.deviceCode)
                        + "&client_id=" + FormEncoding.escape(settings.clients[slot.scenario] ?? "loadtest"))
    }

    private static func errorLabel(_ response: LeanResponse) -> String {
        if response.status == 200 { return "200 token" }
        return "\(response.status) \(LeanJSON.string("error", in: response.body) ?? "?")"
    }

    // MARK: - Device side

    private func arrive(id: Int, intended: Int64) {
        var deviceRNG = SplitMix64(seed: settings.seed &+ UInt64(id + 1) &* 0x9E37_79B9_7F4A_7C15)
        let scenario = settings.mix.draw(rng: &deviceRNG)
        let slot = allocate()
        slots[Int(slot)].live = true
        slots[Int(slot)].id = UInt32(truncatingIfNeeded: id)
        slots[Int(slot)].scenario = scenario
        slots[Int(slot)].fastPollDone = false
        slots[Int(slot)].decided = false
        slots[Int(slot)].slowDownSeen = false
        live += 1
        peakWaiting = max(peakWaiting, live)
        counters.arrivals += 1
        timeline[bucket(intended)].arrivals += 1
        let stepIndex = step(intended)
        steps[stepIndex].peakWaiting = max(steps[stepIndex].peakWaiting, live)
        let generation = slots[Int(slot)].generation
        let request = LeanRequest(method: .POST, path: "/oauth/device_authorization",
                                  form: "client_id=" + FormEncoding.escape(settings.clients[scenario] ?? "loadtest"))
        send(.issue, intended: intended, request: request, classify: { $0.status == 200 ? "200" : Self.errorLabel($0) }) { [self] response, completed in
            guard slots[Int(slot)].generation == generation else { return }
            guard let response, response.status == 200, let deviceCode = LeanJSON.string("device_code", in: response.body),
                  let userCode = LeanJSON.string("user_code", in: response.body) else {
                counters.issueFailures += 1
                timeline[bucket(completed)].failed += 1
                release(slot)
                return
            }
            counters.issued += 1
            let interval = LeanJSON.int("interval", in: response.body) ?? 5
            slots[Int(slot)].deviceCode = deviceCode
            slots[Int(slot)].userCode = scenario == .approve || scenario == .deny ? userCode : ""
            slots[Int(slot)].interval = UInt16(clamping: interval)
            schedule(.poll, slot: slot, at: completed + Int64(interval) * 1_000_000_000)
            if scenario == .approve || scenario == .deny {
                schedule(.person, slot: slot, at: completed + Int64(settings.delay.sample(&deviceRNG) * 1e9))
            }
        }
    }

    private func poll(slot: UInt32, intended: Int64) {
        let device = slots[Int(slot)]
        let generation = device.generation
        send(.poll, intended: intended, request: tokenRequest(device), classify: Self.errorLabel) { [self] response, completed in
            guard slots[Int(slot)].generation == generation, slots[Int(slot)].live else { return }
            let device = slots[Int(slot)]
            let next = completed + Int64(device.interval) * 1_000_000_000
            guard let response else {
                counters.pollErrors += 1
                schedule(.poll, slot: slot, at: next)
                return
            }
            if response.status == 200 {
                tokenReceived(slot: slot, body: response.body, completed: completed)
                return
            }
            switch LeanJSON.string("error", in: response.body) {
            case "authorization_pending":
                if device.scenario == .misbehave && !device.fastPollDone {
                    // Poll again at once, far inside the interval: the answer must be slow_down, interval + 5.
                    slots[Int(slot)].fastPollDone = true
                    schedule(.poll, slot: slot, at: completed)
                } else {
                    if device.scenario == .misbehave && device.fastPollDone && !device.slowDownSeen {
                        // The fast poll was answered pending: the slow_down it must earn did not come.
                        counters.slowDownMissing += 1
                        slots[Int(slot)].slowDownSeen = true
                    }
                    schedule(.poll, slot: slot, at: next)
                }
            case "slow_down":
                let interval = LeanJSON.int("interval", in: response.body) ?? -1
                if interval == Int(device.interval) + 5 { counters.slowDownExact += 1 } else { counters.slowDownWrong += 1 }
                slots[Int(slot)].slowDownSeen = true
                slots[Int(slot)].interval = UInt16(clamping: max(1, interval))
                schedule(.poll, slot: slot, at: completed + Int64(max(1, interval)) * 1_000_000_000)
            case "access_denied":
                if device.scenario == .deny && device.decided { counters.deniedOK += 1 } else { counters.deniedWrong += 1 }
                timeline[bucket(completed)].denied += 1
                release(slot)
            case "expired_token":
                switch device.scenario {
                case .abandon, .misbehave:
                    counters.abandonedExpired += 1
                    if device.scenario == .misbehave && !device.slowDownSeen { counters.slowDownMissing += 1 }
                case .approve, .deny, .refresh:
                    if device.decided { counters.abandonedWrong += 1 } else { counters.expiredBeforeDecision += 1 }
                }
                timeline[bucket(completed)].expired += 1
                release(slot)
            default:
                counters.pollErrors += 1
                if response.status < 500 {
                    // An answer the RFC does not allow here (invalid_grant for a live code, …): the device gives up.
                    timeline[bucket(completed)].failed += 1
                    if device.scenario == .abandon || device.scenario == .misbehave { counters.abandonedWrong += 1 }
                    else if device.scenario == .deny { counters.deniedWrong += 1 } else { counters.approvedWithoutToken += 1 }
                    release(slot)
                } else {
                    schedule(.poll, slot: slot, at: next)
                }
            }
        }
    }

    private func tokenReceived(slot: UInt32, body: ByteBuffer, completed: Int64) {
        let device = slots[Int(slot)]
        counters.tokens += 1
        if device.scenario != .approve || !device.decided { counters.tokensUnexpected += 1 }
        let subject = LeanJSON.string("access_token", in: body).flatMap(JWT.subject(of:))
        if subject != "user-\(device.id)" { counters.tokensWrongSubject += 1 }
        timeline[bucket(completed)].approved += 1
        // Exactly one token: the same code once more must be refused (invalid_grant) or, within the
        // server's retry window for lost answers, get the same token again; never a second token.
        let generation = device.generation
        let first = LeanJSON.string("access_token", in: body)
        send(.probe, intended: completed, request: tokenRequest(device), classify: Self.errorLabel) { [self] response, _ in
            guard slots[Int(slot)].generation == generation else { return }
            if let response, response.status == 200 {
                if first != nil, LeanJSON.string("access_token", in: response.body) == first { counters.probesSameToken += 1 } else { counters.secondTokens += 1 }
            }
            else if let response, LeanJSON.string("error", in: response.body) == "invalid_grant" { counters.probesInvalidGrant += 1 }
            else { counters.probesOther += 1 }
            release(slot)
        }
    }

    // MARK: - Person side

    /// Opens the verification page, looks the code up and approves or denies: three requests, each sent when
    /// the previous answer came (the person's intended times).
    private func person(slot: UInt32, intended: Int64) {
        let device = slots[Int(slot)]
        let generation = device.generation
        let user = "user-\(device.id)"
        let approve = device.scenario == .approve
        let userCode = device.userCode
        let fail: (Int64) -> Void = { [self] completed in
            counters.decisionFailures += 1
            timeline[bucket(completed)].failed += 1
        }
        let form = LeanRequest(method: .GET, path: "/device?user_code=" + FormEncoding.escape(userCode), headers: [(settings.userHeader, user)])
        send(.form, intended: intended, request: form, classify: { $0.status == 200 ? "200 form" : "\($0.status)" }) { [self] response, completed in
            guard slots[Int(slot)].generation == generation else { return }
            guard let response, response.status == 200, let token = HTMLForm.hiddenValue("csrf_token", in: response.bodyString) else {
                fail(completed); return
            }
            var headers = [(settings.userHeader, user)]
            let cookies = Self.cookies(response)
            if !cookies.isEmpty { headers.append(("Cookie", cookies)) }
            let lookup = LeanRequest(method: .POST, path: "/device", headers: headers,
                                     form: FormEncoding.encode([("csrf_token", token), ("user_code", userCode), ("action", "lookup")]))
            send(.lookup, intended: completed, request: lookup,
                 classify: { $0.status == 200 ? "200 confirm" : "\($0.status)" }) { [self] response, completed in
                guard slots[Int(slot)].generation == generation else { return }
                guard let response, response.status == 200 else { fail(completed); return }
                let page = response.bodyString
                guard let csrf = HTMLForm.hiddenValue("csrf_token", in: page), let grant = HTMLForm.hiddenValue("grant_id", in: page),
                      let shown = HTMLForm.hiddenValue("user_code", in: page) else { fail(completed); return }
                var decisionHeaders = headers
                let more = Self.cookies(response)
                if !more.isEmpty { decisionHeaders = [(settings.userHeader, user), ("Cookie", more)] }
                let action = approve ? "approve" : "deny"
                let expected = approve ? "Device connected" : "Request denied"
                let decision = LeanRequest(method: .POST, path: "/device", headers: decisionHeaders,
                                           form: FormEncoding.encode([("csrf_token", csrf), ("user_code", shown), ("grant_id", grant), ("action", action)]))
                send(.decide, intended: completed, request: decision,
                     classify: { $0.status == 200 ? "200 \(action)" : "\($0.status)" }) { [self] response, completed in
                    guard slots[Int(slot)].generation == generation else { return }
                    guard let response, response.status == 200, response.bodyString.contains(expected) else { fail(completed); return }
                    slots[Int(slot)].decided = true
                    slots[Int(slot)].userCode = ""
                    if approve { counters.approvedDecisions += 1 } else { counters.deniedDecisions += 1 }
                }
            }
        }
    }

    private static func cookies(_ response: LeanResponse) -> String {
        response.headers["Set-Cookie"].compactMap { $0.split(separator: ";").first.map(String.init) }.joined(separator: "; ")
    }
}
