/// Which primary serves each of the 16384 slots, from a `CLUSTER SLOTS` reply.
struct ClusterTopology: Sendable {
    /// The primaries, each once, in the order `CLUSTER SLOTS` listed them.
    private(set) var primaries: [RedisEndpoint] = []
    /// The replicas (only used as fall-back nodes to ask for the topology).
    private(set) var replicas: [RedisEndpoint] = []
    /// Index into ``primaries`` per slot; -1 when no node serves the slot.
    private var owners = [Int16](repeating: -1, count: RedisHashSlot.count)

    init() {}

    /// Parses `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], [replica…]…], …]`.
    /// - Parameter defaultHost: the host of the node that answered, for entries whose host is
    ///   empty (Redis reports an empty or `?` host when it does not know its own address).
    init(slots reply: RedisValue, defaultHost: String) throws {
        guard let ranges = reply.array else {
            throw RedisError(.protocolError, "CLUSTER SLOTS did not answer an array")
        }
        for range in ranges {
            guard let fields = range.array, fields.count >= 3,
                let start = fields[0].int, let end = fields[1].int,
                0 <= start, start <= end, end < RedisHashSlot.count,
                let primary = Self.endpoint(fields[2], defaultHost: defaultHost)
            else {
                throw RedisError(.protocolError, "unexpected CLUSTER SLOTS entry: \(range)")
            }
            let index = index(of: primary)
            for slot in start...end { owners[slot] = Int16(index) }
            for replica in fields.dropFirst(3) {
                if let endpoint = Self.endpoint(replica, defaultHost: defaultHost), !replicas.contains(endpoint) {
                    replicas.append(endpoint)
                }
            }
        }
    }

    private static func endpoint(_ node: RedisValue, defaultHost: String) -> RedisEndpoint? {
        guard let fields = node.array, fields.count >= 2, let port = fields[1].int, RedisEndpoint.ports.contains(port) else { return nil }
        let host = fields[0].string ?? ""
        return .tcp(host: host.isEmpty || host == "?" ? defaultHost : host, port: port)
    }

    private mutating func index(of endpoint: RedisEndpoint) -> Int {
        if let index = primaries.firstIndex(of: endpoint) { return index }
        primaries.append(endpoint)
        replicas.removeAll { $0 == endpoint }
        return primaries.count - 1
    }

    /// The primary serving `slot`, or `nil` when none does.
    func owner(of slot: Int) -> RedisEndpoint? {
        let index = owners[slot]
        return index >= 0 ? primaries[Int(index)] : nil
    }

    /// Number of slots some primary serves (16384 when the cluster is fully covered).
    var coveredSlots: Int { owners.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    /// Records a `MOVED` answer: `slot` is now served by `endpoint`.
    mutating func assign(slot: Int, to endpoint: RedisEndpoint) {
        owners[slot] = Int16(index(of: endpoint))
    }
}
