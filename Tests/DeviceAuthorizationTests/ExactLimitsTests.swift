import Foundation
import RedisClient
import Testing

@testable import DeviceAuthorization

/// RFC 8628 §5.1: the guess limits hold exactly under a concurrent burst across two API nodes,
/// because every lookup is charged before it is answered (see `DeviceCodeStore.lookup(userCode:attempt:)`).
@Suite("Exact guess limits under concurrent bursts across two nodes")
struct ExactLimitsTests {
    enum Answer: Hashable { case found, notFound, tooManyAttempts, other }

    /// Runs every lookup at once, alternating between the nodes, and counts the answers.
    static func burst(_ nodes: [DeviceCodeStore], _ lookups: [(code: String, attempt: LookupAttempt)]) async -> [Answer: Int] {
        await withTaskGroup(of: Answer.self) { group in
            for (index, lookup) in lookups.enumerated() {
                group.addTask {
                    do {
                        _ = try await nodes[index % nodes.count].lookup(userCode: lookup.code, attempt: lookup.attempt)
                        return .found
                    } catch let error as DeviceAuthorizationError where error.code == .notFound {
                        return .notFound
                    } catch let error as DeviceAuthorizationError where error.code == .tooManyAttempts {
                        return error.retryAfter == nil ? .other : .tooManyAttempts
                    } catch {
                        return .other
                    }
                }
            }
            return await group.reduce(into: [Answer: Int]()) { $0[$1, default: 0] += 1 }
        }
    }

    /// 300 wrong user codes, each distinct (a guesser walks the code space).
    static func wrongCodes(_ count: Int = 300) -> [String] {
        let alphabet = Array("BCDFGHJKLMNPQRSTVWXZ")
        return (0..<count).map { index in
            String((0..<8).map { position in alphabet[(index / [1, 20, 400, 8000, 1, 1, 1, 1][position] + position) % 20] })
        }
    }

    /// The `c` field of a failure counter, as Redis holds it (nil: no counter).
    static func count(_ f: StoreFixture, _ key: String) async throws -> Int? {
        try await f.client.send("HGET", key, "c").string.flatMap { Int($0) }
    }

    @Test func perCallerLimitTenOf300ConcurrentWrongCodesAreAnsweredAndCorrectOnesPassFree() async throws {
        let f = try StoreFixture(connections: 4) { $0.maxFailuresPerCaller = 10 }
        defer { f.shutdown() }
        let nodes = [f.store, try f.anotherNode()]
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        // 300 wrong codes from one address, mixed with 30 lookups of the right code from 30 others.
        var lookups = Self.wrongCodes().map { (code: $0, attempt: LookupAttempt(callers: ["203.0.113.66"])) }
        for index in 0..<30 {
            lookups.insert((issued.userCode, LookupAttempt(callers: ["198.51.100.\(index)"])), at: index * 10)
        }
        let answers = await Self.burst(nodes, lookups)
        #expect(answers == [.notFound: 10, .tooManyAttempts: 290, .found: 30])
        #expect(try await Self.count(f, f.store.keys.callerFailuresKey("203.0.113.66")) == 10)
        #expect(try await Self.count(f, f.store.keys.globalFailuresKey) == 10, "the 30 successes gave their global charge back")
        #expect(try await Self.count(f, f.store.keys.callerFailuresKey("198.51.100.3")) == nil, "and their callers' counters are gone")
    }

    @Test func perUserLimitTenOf300ConcurrentWrongCodesFrom300Addresses() async throws {
        let f = try StoreFixture(connections: 4) { $0.maxFailuresPerUser = 10 }
        defer { f.shutdown() }
        let nodes = [f.store, try f.anotherNode()]
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        var lookups = Self.wrongCodes().enumerated().map { (code: $1, attempt: LookupAttempt(callers: ["10.1.\($0 / 256).\($0 % 256)"], userID: "mallory")) }
        for index in 0..<30 {
            // Other people (each with a budget of 10, so their own in-flight charges never fill it).
            lookups.insert((issued.userCode, LookupAttempt(callers: ["10.9.0.\(index)"], userID: "person-\(index)")), at: index * 10)
        }
        let answers = await Self.burst(nodes, lookups)
        #expect(answers == [.notFound: 10, .tooManyAttempts: 290, .found: 30])
        #expect(try await Self.count(f, f.store.keys.userFailuresKey("mallory")) == 10)
        #expect(try await Self.count(f, f.store.keys.userFailuresKey("person-7")) == nil)
    }

    @Test func globalLimitTenOf300ConcurrentWrongCodesFrom300Addresses() async throws {
        let f = try StoreFixture(connections: 4) { $0.maxFailuresGlobal = 10 }
        defer { f.shutdown() }
        let nodes = [f.store, try f.anotherNode()]
        let issued = try await f.store.issue(clientID: "tv", scopes: [])
        // Right codes first, one after another (concurrent ones would share the global budget of
        // 10 with each other while they hold their charge): they leave the budget untouched.
        for index in 0..<30 {
            _ = try await nodes[index % 2].lookup(userCode: issued.userCode, attempt: LookupAttempt(callers: ["192.0.2.\(index)"]))
        }
        #expect(try await Self.count(f, f.store.keys.globalFailuresKey) == nil)
        let lookups = Self.wrongCodes().enumerated().map { (code: $1, attempt: LookupAttempt(callers: ["10.2.\($0 / 256).\($0 % 256)"])) }
        let answers = await Self.burst(nodes, lookups)
        #expect(answers == [.notFound: 10, .tooManyAttempts: 290])
        #expect(try await Self.count(f, f.store.keys.globalFailuresKey) == 10)
        let after = await decisionError { _ = try await f.store.lookup(userCode: issued.userCode, attempt: LookupAttempt(callers: ["192.0.2.200"])) }
        #expect(after?.code == .tooManyAttempts, "the budget is spent for everyone until the window ends")
    }

    @Test func theWrongCodesOfTheBurstAreAllDistinct() {
        let codes = Self.wrongCodes()
        #expect(Set(codes).count == 300 && codes.allSatisfy { UserCode.normalize($0) == $0 })
    }
}
