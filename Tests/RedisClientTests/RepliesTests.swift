import Foundation
import RedisClient
import Testing

@Suite("Replies: every RESP2 type, binary safety")
struct RepliesTests {
    @Test func statusIntegerBulkNilAndArray() async throws {
        let client = try TestRedis.client()
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        #expect(try await client.send("SET", p + "s", "hello") == .simpleString("OK"))
        #expect(try await client.send("GET", p + "s") == .bulkString(Array("hello".utf8)))
        #expect(try await client.send("GET", p + "missing") == .null)
        #expect(try await client.send("INCRBY", p + "n", 41) == .integer(41))
        #expect(try await client.send("INCR", p + "n").int == 42)
        try await client.send("RPUSH", p + "l", "a", "b", "")
        #expect(try await client.send("LRANGE", p + "l", 0, -1) == .array([.bulkString([97]), .bulkString([98]), .bulkString([])]))
        #expect(try await client.send("LRANGE", p + "nothing", 0, -1) == .array([]))
    }

    @Test func nestedArraysNilElementsAndNestedErrors() async throws {
        let client = try TestRedis.client()
        defer { client.shutdown() }
        let script = RedisScript("return {1, {2, 'two', {false}}, redis.error_reply('INNER boom'), 'x'}")
        let value = try await client.eval(script)
        #expect(value == .array([.integer(1), .array([.integer(2), .bulkString(Array("two".utf8)), .array([.null])]), .error("INNER boom"), .bulkString([120])]))
    }

    @Test func errorReplyIsThrownWithServerCodeAndMessage() async throws {
        let client = try TestRedis.client()
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        let error = await expectRedisError { try await client.send("NOSUCHCOMMAND", "x") }
        #expect(error?.code == .server)
        #expect(error?.message.contains("unknown command") == true)
        try await client.send("SET", p + "str", "v")
        let wrongType = await expectRedisError { try await client.send("LPUSH", p + "str", "x") }
        #expect(wrongType?.serverErrorPrefix == "WRONGTYPE")
        // The connection is still usable after error replies.
        #expect(try await client.send("PING") == .simpleString("PONG"))
    }

    @Test func binarySafeValuesWithNulBytesAndOneMebibyte() async throws {
        let client = try TestRedis.client()
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        let allBytes = (0...255).map { UInt8($0) } + [0, 0, 13, 10, 0]
        try await client.send("SET", p + "bin", allBytes)
        #expect(try await client.send("GET", p + "bin").bytes == allBytes)
        #expect(try await client.send("STRLEN", p + "bin").int == allBytes.count)
        let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try await client.send("SET", p + "big", big)
        #expect(try await client.send("GET", p + "big").bytes == big)
        // A key with NUL bytes is a different key from its prefix.
        let nulKey: [UInt8] = Array((p + "k").utf8) + [0, 1]
        try await client.send("SET", nulKey, "nul")
        #expect(try await client.send("GET", p + "k") == .null)
        #expect(try await client.send("GET", nulKey).string == "nul")
    }

    @Test func pipelineReturnsEachResultInOrderWithPerCommandErrors() async throws {
        let client = try TestRedis.client()
        defer { client.shutdown() }
        let p = TestRedis.prefix()
        let results = await client.pipeline([
            RedisCommand("SET", p + "a", "1"),
            RedisCommand("INCR", p + "a"),
            RedisCommand("LPUSH", p + "a", "x"),
            RedisCommand("GET", p + "a"),
        ])
        #expect(results.count == 4)
        #expect(try results[0].get() == .simpleString("OK"))
        #expect(try results[1].get() == .integer(2))
        guard case .failure(let error) = results[2] else {
            Issue.record("LPUSH on a string should fail")
            return
        }
        #expect(error.serverErrorPrefix == "WRONGTYPE")
        #expect(try results[3].get().string == "2")
    }
}
