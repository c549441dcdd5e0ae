import RedisClient

/// What Redis spends on pending grants, measured two ways.
enum GrantMemory {
    /// `MEMORY USAGE` of a sample of grants (one key each).
    struct Sample: Sendable {
        /// How many grants were measured.
        var grants: Int
        /// Average bytes of the grant's record (hash) per grant.
        var recordBytes: Double
        /// The record's encoding (`listpack` while it stays small).
        var recordEncoding: String

        /// `sample=… record=…B (encoding)`.
        var summary: String {
            "sample=\(grants) grants record=\(Console.fixed(recordBytes, 1))B (\(recordEncoding))"
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

    /// `MEMORY USAGE … SAMPLES 0` (exact) of each grant's record.
    static func measure(_ client: RedisClient, recordKeys: [String]) async throws -> Sample {
        var total = 0
        var measured = 0
        var encoding = ""
        for key in recordKeys {
            guard let bytes = try await client.send("MEMORY", "USAGE", key, "SAMPLES", 0).int else { continue }
            if encoding.isEmpty { encoding = try await client.send("OBJECT", "ENCODING", key).string ?? "?" }
            total += bytes
            measured += 1
        }
        guard measured > 0 else { throw ChildProcess.Failure(description: "no grant could be measured with MEMORY USAGE") }
        return Sample(grants: measured, recordBytes: Double(total) / Double(measured), recordEncoding: encoding)
    }
}
