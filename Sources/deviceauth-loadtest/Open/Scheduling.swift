import Foundation
import RedisClient

/// A waiting device's next action, as a 16-byte record in a ``DueHeap`` (no task, no closure per device).
struct DueEntry: Sendable, Equatable {
    enum Kind: UInt8, Sendable {
        /// The device polls the token endpoint.
        case poll
        /// The person opens the verification page and approves or denies.
        case person
    }

    /// Intended time of the action, nanoseconds since the run's start.
    var due: Int64
    /// Index of the device in its worker's slot table.
    var slot: UInt32
    /// Generation of the slot when the entry was pushed: a stale entry (slot reused) is skipped.
    var generation: UInt16
    var kind: Kind
}

/// A binary min-heap of ``DueEntry`` by due time: O(log n) push and pop, 16 bytes per waiting entry.
struct DueHeap: Sendable {
    private(set) var storage: [DueEntry] = []

    var count: Int { storage.count }
    var isEmpty: Bool { storage.isEmpty }
    var next: DueEntry? { storage.first }

    mutating func push(_ entry: DueEntry) {
        storage.append(entry)
        var child = storage.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard storage[child].due < storage[parent].due else { break }
            storage.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(now: Int64) -> DueEntry? {
        guard let first = storage.first, first.due <= now else { return nil }
        return pop()
    }

    mutating func pop() -> DueEntry? {
        guard !storage.isEmpty else { return nil }
        let top = storage[0]
        let last = storage.removeLast()
        guard !storage.isEmpty else { return top }
        storage[0] = last
        var parent = 0
        let count = storage.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { break }
            var smallest = left
            if left + 1 < count, storage[left + 1].due < storage[left].due { smallest = left + 1 }
            guard storage[smallest].due < storage[parent].due else { break }
            storage.swapAt(smallest, parent)
            parent = smallest
        }
        return top
    }
}

/// When new devices arrive (open model): a constant rate, a linear ramp, or steps.
///
/// Arrivals are evenly spaced by the integral of the rate: device k arrives when ∫rate ≥ k, so a run
/// with the same schedule always offers the same load.
enum ArrivalSchedule: Sendable, Equatable, CustomStringConvertible {
    case constant(rate: Double, seconds: Double)
    case ramp(from: Double, to: Double, seconds: Double)
    /// (rate per second, seconds) in order.
    case steps([Step])

    struct Step: Sendable, Equatable {
        var rate: Double
        var seconds: Double
    }

    /// Parses `--steps "r1:secs,r2:secs"`.
    static func parseSteps(_ text: String) -> [Step]? {
        var steps: [Step] = []
        for part in text.split(separator: ",") {
            let pair = part.split(separator: ":")
            guard pair.count == 2, let rate = Double(pair[0].trimmingCharacters(in: .whitespaces)),
                let seconds = Double(pair[1].trimmingCharacters(in: .whitespaces)), rate >= 0, seconds > 0
            else { return nil }
            steps.append(Step(rate: rate, seconds: seconds))
        }
        return steps.isEmpty ? nil : steps
    }

    /// Parses `--ramp A-B` (devices per second).
    static func parseRamp(_ text: String) -> (Double, Double)? {
        let parts = text.split(separator: "-").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, parts[0] >= 0, parts[1] >= 0 else { return nil }
        return (parts[0], parts[1])
    }

    /// Parses a rate such as `50`, `50/s`.
    static func parseRate(_ text: String) -> Double? {
        let trimmed = text.hasSuffix("/s") ? String(text.dropLast(2)) : text
        guard let rate = Double(trimmed), rate >= 0 else { return nil }
        return rate
    }

    var seconds: Double {
        switch self {
        case .constant(_, let seconds), .ramp(_, _, let seconds): seconds
        case .steps(let steps): steps.reduce(0) { $0 + $1.seconds }
        }
    }

    /// Arrivals per second at time `t` (seconds since the start).
    func rate(at t: Double) -> Double {
        guard t >= 0, t < seconds else { return 0 }
        switch self {
        case .constant(let rate, _): return rate
        case .ramp(let from, let to, let seconds): return from + (to - from) * t / seconds
        case .steps(let steps):
            var start = 0.0
            for step in steps {
                if t < start + step.seconds { return step.rate }
                start += step.seconds
            }
            return 0
        }
    }

    /// Expected arrivals in [0, t]: the integral of the rate.
    func cumulative(at t: Double) -> Double {
        let t = min(max(0, t), seconds)
        switch self {
        case .constant(let rate, _): return rate * t
        case .ramp(let from, let to, let seconds): return from * t + (to - from) * t * t / (2 * seconds)
        case .steps(let steps):
            var total = 0.0
            var start = 0.0
            for step in steps {
                let covered = min(max(0, t - start), step.seconds)
                total += step.rate * covered
                start += step.seconds
            }
            return total
        }
    }

    /// Devices that should have arrived by `t`.
    func arrivals(by t: Double) -> Int {
        Int((cumulative(at: t) + 1e-9).rounded(.down))
    }

    /// When device `index` (0-based) is due: the first t with ∫rate ≥ index + 1 (bisection), or nil after the schedule.
    func arrivalTime(of index: Int) -> Double? {
        let target = Double(index + 1)
        guard cumulative(at: seconds) + 1e-9 >= target else { return nil }
        var low = 0.0
        var high = seconds
        for _ in 0..<50 {
            let middle = (low + high) / 2
            if cumulative(at: middle) + 1e-9 >= target { high = middle } else { low = middle }
        }
        return high
    }

    /// The step in effect at `t` (0 for constant and ramp schedules).
    func stepIndex(at t: Double) -> Int {
        guard case .steps(let steps) = self else { return 0 }
        var start = 0.0
        for (index, step) in steps.enumerated() {
            if t < start + step.seconds { return index }
            start += step.seconds
        }
        return steps.count - 1
    }

    var description: String {
        switch self {
        case .constant(let rate, let seconds): "\(Self.format(rate))/s for \(Self.format(seconds)) s"
        case .ramp(let from, let to, let seconds): "ramp \(Self.format(from))-\(Self.format(to))/s over \(Self.format(seconds)) s"
        case .steps(let steps): "steps " + steps.map { "\(Self.format($0.rate)):\(Self.format($0.seconds))" }.joined(separator: ",")
        }
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.2f", value)
    }
}

/// How long the person takes to approve or deny (open model): log-normal by default, clamped.
enum DecisionDelay: Sendable, Equatable, CustomStringConvertible {
    /// Log-normal with this median and shape σ, clamped to `minimum…maximum` seconds.
    case logNormal(median: Double, sigma: Double, minimum: Double, maximum: Double)
    /// Uniform between two bounds, in seconds.
    case uniform(minimum: Double, maximum: Double)

    static let standard = DecisionDelay.logNormal(median: 20, sigma: 0.75, minimum: 5, maximum: 120)

    /// Parses `lognormal:MEDIAN[:SIGMA[:MIN-MAX]]`, `MIN-MAX` (uniform) or `N` (fixed), in seconds.
    init?(parsing text: String) {
        if text.hasPrefix("lognormal") {
            let parts = text.split(separator: ":").dropFirst()
            var median = 20.0
            var sigma = 0.75
            var minimum = 5.0
            var maximum = 120.0
            let fields = Array(parts)
            if fields.count >= 1 {
                guard let value = Double(fields[0]), value > 0 else { return nil }
                median = value
            }
            if fields.count >= 2 {
                guard let value = Double(fields[1]), value >= 0 else { return nil }
                sigma = value
            }
            if fields.count >= 3 {
                let bounds = fields[2].split(separator: "-").compactMap { Double($0) }
                guard bounds.count == 2, bounds[0] <= bounds[1] else { return nil }
                minimum = bounds[0]
                maximum = bounds[1]
            }
            guard fields.count <= 3 else { return nil }
            self = .logNormal(median: median, sigma: sigma, minimum: minimum, maximum: maximum)
            return
        }
        let bounds = text.split(separator: "-").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        switch bounds.count {
        case 1 where bounds[0] >= 0: self = .uniform(minimum: bounds[0], maximum: bounds[0])
        case 2 where bounds[0] >= 0 && bounds[0] <= bounds[1]: self = .uniform(minimum: bounds[0], maximum: bounds[1])
        default: return nil
        }
    }

    /// One delay in seconds.
    func sample(_ rng: inout SplitMix64) -> Double {
        switch self {
        case .uniform(let minimum, let maximum):
            return minimum + (maximum - minimum) * Self.unit(&rng)
        case .logNormal(let median, let sigma, let minimum, let maximum):
            // Box–Muller: one standard normal from two uniforms in (0, 1].
            let u1 = max(Self.unit(&rng), 1e-12)
            let u2 = Self.unit(&rng)
            let normal = (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
            return min(max(median * exp(sigma * normal), minimum), maximum)
        }
    }

    /// Uniform in [0, 1).
    static func unit(_ rng: inout SplitMix64) -> Double {
        Double(rng.next() >> 11) / Double(1 << 53)
    }

    var description: String {
        switch self {
        case .logNormal(let median, let sigma, let minimum, let maximum): "lognormal median \(median) s, sigma \(sigma), \(minimum)-\(maximum) s"
        case .uniform(let minimum, let maximum): "uniform \(minimum)-\(maximum) s"
        }
    }
}

/// Coordinated-omission-corrected timing of one request: measured from when it should have been sent.
struct RequestTiming: Sendable, Equatable {
    /// When the device meant to send it (ns since start): its due time.
    var intended: Int64
    /// When the harness actually wrote it.
    var sent: Int64
    /// When the answer was complete.
    var completed: Int64

    /// What the device experienced: from the intended send time to the answer.
    var correctedNanoseconds: Int64 { max(0, completed - intended) }
    /// What a naive client would report: from the actual send.
    var serviceNanoseconds: Int64 { max(0, completed - sent) }
    /// How late the harness itself was in sending.
    var lagNanoseconds: Int64 { max(0, sent - intended) }
}

/// A compact log-bucketed histogram (≈4.4 % resolution, 1 µs to ~10 min) for the per-second timeline,
/// where an HdrHistogram per endpoint and second would cost far more memory.
struct CoarseHistogram: Sendable, Codable, Equatable {
    static let bucketsPerOctave = 16.0
    static let bucketCount = 480

    private(set) var counts: [UInt32] = []
    private(set) var total: UInt64 = 0

    static func bucket(micros: UInt64) -> Int {
        guard micros > 1 else { return 0 }
        return min(bucketCount - 1, Int(log2(Double(micros)) * bucketsPerOctave))
    }

    /// Upper edge of a bucket in microseconds.
    static func value(bucket: Int) -> Double {
        pow(2, Double(bucket + 1) / bucketsPerOctave)
    }

    mutating func record(micros: UInt64) {
        if counts.isEmpty { counts = Array(repeating: 0, count: Self.bucketCount) }
        counts[Self.bucket(micros: micros)] &+= 1
        total += 1
    }

    mutating func add(_ other: CoarseHistogram) {
        guard other.total > 0 else { return }
        if counts.isEmpty { counts = Array(repeating: 0, count: Self.bucketCount) }
        for index in other.counts.indices { counts[index] &+= other.counts[index] }
        total += other.total
    }

    /// The latency at a percentile, in milliseconds (upper edge of its bucket); 0 when empty.
    func percentileMs(_ percentile: Double) -> Double {
        guard total > 0 else { return 0 }
        let rank = max(1, UInt64((Double(total) * percentile / 100).rounded(.up)))
        var seen: UInt64 = 0
        for (index, count) in counts.enumerated() {
            seen += UInt64(count)
            if seen >= rank { return Self.value(bucket: index) / 1000 }
        }
        return Self.value(bucket: Self.bucketCount - 1) / 1000
    }
}

/// `--find-max`: the arrival rate is raised step by step; the knee is the last step that met the objective.
enum FindMax {
    struct StepResult: Sendable, Codable, Equatable {
        var arrivalRate: Double
        var requests: UInt64
        var errors: UInt64
        /// p99 of token polls (coordinated-omission corrected), ms.
        var p99Ms: Double
        var pollsPerSecond: Double
        var waitingDevices: Int

        var errorRate: Double { requests == 0 ? 0 : Double(errors) / Double(requests) }
    }

    struct Knee: Sendable, Codable, Equatable {
        /// The highest arrival rate whose step met both objectives (nil: even the first broke).
        var arrivalRate: Double?
        var pollsPerSecond: Double?
        var waitingDevices: Int?
        /// The first rate that broke, and why.
        var brokeAt: Double?
        var reason: String?
    }

    /// Why a step breaks the objectives, or nil if it meets them.
    static func violation(_ step: StepResult, maxP99Ms: Double, maxErrorRate: Double) -> String? {
        if step.errorRate > maxErrorRate { return String(format: "error rate %.4f > %.4f", step.errorRate, maxErrorRate) }
        if step.p99Ms > maxP99Ms { return String(format: "p99 %.1f ms > %.1f ms", step.p99Ms, maxP99Ms) }
        return nil
    }

    static func knee(_ steps: [StepResult], maxP99Ms: Double, maxErrorRate: Double) -> Knee {
        var knee = Knee()
        for step in steps {
            if let reason = violation(step, maxP99Ms: maxP99Ms, maxErrorRate: maxErrorRate) {
                knee.brokeAt = step.arrivalRate
                knee.reason = reason
                return knee
            }
            knee.arrivalRate = step.arrivalRate
            knee.pollsPerSecond = step.pollsPerSecond
            knee.waitingDevices = step.waitingDevices
        }
        return knee
    }

    /// The schedule find-max offers: `start`, `start+step`, … each for `seconds`, up to `maximum`.
    static func schedule(start: Double, step: Double, seconds: Double, maximum: Double) -> [ArrivalSchedule.Step] {
        var steps: [ArrivalSchedule.Step] = []
        var rate = start
        while rate <= maximum + 1e-9 && steps.count < 1000 {
            steps.append(.init(rate: rate, seconds: seconds))
            rate += step
        }
        return steps
    }
}
