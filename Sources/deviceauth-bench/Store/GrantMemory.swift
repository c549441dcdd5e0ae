import RedisClient

/// What Redis spends on pending grants, measured two ways.
enum GrantMemory {
    /// `MEMORY USAGE` of both keys of a sample of grants.
    struct Sample: Sendable {
        /// How many grants (index key + record) were measured.
        var grants: Int
        /// Average bytes of the device record (hash) per grant.
        var recordBytes: Double
        /// Average bytes of the user-code index (string) per grant.
        var indexBytes: Double
        /// The record's encoding (`listpack` while it stays small).
        var recordEncoding: String

        /// Both keys together, per grant.
        var totalBytes: Double { recordBytes + indexBytes }

        /// `sample=… record=…B (encoding) index=…B`.
        var summary: String {
            "sample=\(grants) grants record=\(Console.fixed(recordBytes, 1))B (\(recordEncoding)) index=\(Console.fixed(indexBytes, 1))B"
        }
    }

    /// The server's `used_memory` from `INFO memory`.
    static func usedMemory(_ client: RedisClient) async throws -> Int {
        let info = try await client.send("INFO", "memory").string ?? ""
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("used_memory:") {
            if let value = Int(line.dropFirst("used_memory:".count)) { return value }
        }
        throw ChildProcess.Failure(description: "INFO memory has no used_memory field")
    }

    /// Up to `limit` user-code index keys under `prefix`, found with `SCAN … MATCH <prefix>:*:u:* COUNT 1000`.
    static func indexKeys(_ client: RedisClient, prefix: String, limit: Int) async throws -> [String] {
        var keys: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await client.send("SCAN", cursor, "MATCH", "\(prefix):*:u:*", "COUNT", 1_000).array ?? []
            guard reply.count == 2, let next = reply[0].string else {
                throw ChildProcess.Failure(description: "unexpected SCAN reply: \(reply)")
            }
            cursor = next
            keys += (reply[1].array ?? []).compactMap(\.string)
        } while cursor != "0" && keys.count < limit
        return Array(keys.prefix(limit))
    }

    /// `MEMORY USAGE … SAMPLES 0` (exact) of each index key and of the record it points to:
    /// the index holds the record id, and the record is `<prefix>:{<tag>}:d:<id>` with the same tag.
    static func measure(_ client: RedisClient, indexKeys: [String], prefix: String) async throws -> Sample {
        var recordTotal = 0
        var indexTotal = 0
        var measured = 0
        var encoding = ""
        for indexKey in indexKeys {
            guard let open = indexKey.firstIndex(of: "{"), let close = indexKey.firstIndex(of: "}"),
                  let id = try await client.send("GET", indexKey).string else { continue }
            let tag = indexKey[indexKey.index(after: open)..<close]
            let recordKey = "\(prefix):{\(tag)}:d:\(id)"
            guard let record = try await client.send("MEMORY", "USAGE", recordKey, "SAMPLES", 0).int,
                  let index = try await client.send("MEMORY", "USAGE", indexKey, "SAMPLES", 0).int else { continue }
            if encoding.isEmpty { encoding = try await client.send("OBJECT", "ENCODING", recordKey).string ?? "?" }
            recordTotal += record
            indexTotal += index
            measured += 1
        }
        guard measured > 0 else { throw ChildProcess.Failure(description: "no grant could be measured with MEMORY USAGE") }
        return Sample(grants: measured, recordBytes: Double(recordTotal) / Double(measured),
                      indexBytes: Double(indexTotal) / Double(measured), recordEncoding: encoding)
    }
}
