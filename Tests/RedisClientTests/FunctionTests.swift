import Foundation
import RedisClient
import TestProcesses
import Testing

/// Scripts as Redis 7 functions (the default ``RedisScriptCalls/functions``): `FCALL` with the
/// library loaded on demand, after `FUNCTION FLUSH`, in pipelines, under concurrency, and with an
/// ACL user that may call functions but neither run Lua of its own (`EVAL`) nor load libraries.
@Suite(.serialized) struct FunctionTests {
    private func counterScript() -> RedisScript {
        // A unique source per test: a unique library, so tests do not see each other's loads.
        RedisScript("#!lua\n-- \(UUID().uuidString)\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    }

    private func libraryExists(_ client: RedisClient, _ script: RedisScript) async throws -> Bool {
        !(try await client.send("FUNCTION", "LIST", "LIBRARYNAME", "l" + script.sha1).array ?? []).isEmpty
    }

    @Test func scriptsRunAsFunctionsAndAreLoadedAgainAfterFunctionFlush() async throws {
        let server = try await PrivateRedisServer()
        let client = try RedisClient(url: server.url)
        defer { client.shutdown() }
        #expect(client.configuration.scriptCalls == .functions)
        let script = counterScript()
        #expect(try await libraryExists(client, script) == false)
        #expect(try await client.eval(script, keys: ["n"], arguments: [2]) == .integer(2))
        #expect(try await libraryExists(client, script), "the first FCALL loaded the library")
        #expect(try await client.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(0)]), "never sent as EVAL")
        try await client.send("FUNCTION", "FLUSH")
        #expect(try await client.eval(script, keys: ["n"], arguments: [3]) == .integer(5))
        try await client.send("FUNCTION", "FLUSH")
        let results = await client.pipeline([
            client.scriptCommand(script, keys: ["n"], arguments: [10]),
            RedisCommand("GET", "n"),
        ])
        #expect(try results[0].get() == .integer(15))
        #expect(try await client.send("GET", "n").int == 15, "the function ran exactly once after 'Function not found'")
    }

    @Test func concurrentCallsAfterAFlushEachRunOnce() async throws {
        let server = try await PrivateRedisServer()
        let client = try RedisClient(url: server.url)
        defer { client.shutdown() }
        let script = counterScript()
        for round in 1...5 {
            try await client.send("FUNCTION", "FLUSH")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<64 { group.addTask { _ = try await client.eval(script, keys: ["c"], arguments: [1]) } }
                try await group.waitForAll()
            }
            #expect(try await client.send("GET", "c").int == 64 * round)
        }
    }

    @Test func flagsOfTheShebangBecomeFunctionFlags() async throws {
        let server = try await PrivateRedisServer()
        let client = try RedisClient(url: server.url)
        defer { client.shutdown() }
        let readOnly = RedisScript("#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])")
        #expect(readOnly.flags == ["no-writes"] && readOnly.isReadOnly)
        try await client.send("SET", "k", "v")
        #expect(try await client.eval(readOnly, keys: ["k"]).string == "v", "sent as FCALL_RO")
        let writesAnyway = RedisScript("#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 'x')")
        let error = await #expect(throws: RedisError.self) { try await client.eval(writesAnyway, keys: ["k"]) }
        #expect(error?.code == .server)
        #expect(try await client.send("GET", "k").string == "v", "a no-writes function cannot write")
        let oomTolerant = RedisScript("#!lua flags=allow-oom,no-writes\nreturn 1")
        #expect(oomTolerant.flags == ["allow-oom", "no-writes"])
        #expect(try await client.eval(oomTolerant).int == 1)
    }

    @Test func loadFunctionsPreloadsEveryLibrary() async throws {
        let server = try await PrivateRedisServer()
        let client = try RedisClient(url: server.url)
        defer { client.shutdown() }
        let scripts = [counterScript(), counterScript(), counterScript()]
        try await client.loadFunctions(scripts)
        for script in scripts { #expect(try await libraryExists(client, script)) }
        try await client.loadFunctions(scripts)  // REPLACE: loading again is harmless
    }

    /// The ACL the product ships: the application's user may FCALL but not EVAL, EVALSHA,
    /// SCRIPT LOAD or FUNCTION LOAD; a separate loader user may only load.
    @Test func anApplicationUserThatMayNotLoadUsesTheLoaderUser() async throws {
        let server = try await PrivateRedisServer()
        let admin = try RedisClient(url: server.url)
        defer { admin.shutdown() }
        try await admin.send("ACL", "SETUSER", "app", "on", ">app-secret", "~*", "resetchannels", "-@all", "+fcall", "+fcall_ro", "+incrby", "+get", "+ping")
        try await admin.send("ACL", "SETUSER", "loader", "on", ">loader-secret", "resetkeys", "resetchannels", "-@all", "+function|load")
        let script = counterScript()

        var appOnly = try RedisClientConfiguration(url: "redis://app:app-secret@127.0.0.1:\(server.port)")
        appOnly.connectionCount = 1
        let withoutLoader = RedisClient(configuration: appOnly)
        defer { withoutLoader.shutdown() }
        let refused = await #expect(throws: RedisError.self) { try await withoutLoader.eval(script, keys: ["n"], arguments: [1]) }
        #expect(refused?.message.contains("may not load function libraries") == true, "\(String(describing: refused))")
        #expect(try await admin.send("GET", "n") == .null, "nothing ran")
        for command in [
            RedisCommand("EVAL", "return redis.call('INCRBY', KEYS[1], 1)", "1", "n"),
            RedisCommand("SCRIPT", "LOAD", "return 1"),
            RedisCommand("FUNCTION", "LOAD", script.library),
            RedisCommand("FUNCTION", "FLUSH"),
        ] {
            let error = await #expect(throws: RedisError.self) { try await withoutLoader.send(command) }
            #expect(error?.serverErrorPrefix == "NOPERM", "\(String(describing: error))")
        }

        var withLoaderConfiguration = appOnly
        withLoaderConfiguration.functionLoader = RedisCredentials(username: "loader", password: "loader-secret")
        let withLoader = RedisClient(configuration: withLoaderConfiguration)
        defer { withLoader.shutdown() }
        #expect(try await withLoader.eval(script, keys: ["n"], arguments: [1]) == .integer(1))
        #expect(try await withoutLoader.eval(script, keys: ["n"], arguments: [1]) == .integer(2), "once loaded, the app user can call it")
        try await admin.send("FUNCTION", "FLUSH")
        #expect(try await withLoader.eval(script, keys: ["n"], arguments: [1]) == .integer(3), "reloaded by the loader user")
        let wrongLoader = RedisClient(
            configuration: {
                var configuration = appOnly
                configuration.functionLoader = RedisCredentials(username: "loader", password: "wrong")
                return configuration
            }())
        defer { wrongLoader.shutdown() }
        try await admin.send("FUNCTION", "FLUSH")
        await #expect(throws: RedisError.self) { try await wrongLoader.eval(script, keys: ["n"], arguments: [1]) }
        #expect(try await admin.send("GET", "n").int == 3)
        #expect(!"\(withLoaderConfiguration.functionLoader!)".contains("loader-secret"), "credentials never print their password")
    }
}

@Suite struct FunctionURLOptionTests {
    @Test func urlQueryOptionsChooseScriptCallsAndTheLoader() throws {
        let plain = try RedisClientConfiguration(url: "redis://127.0.0.1:6379/0")
        #expect(plain.scriptCalls == .functions && plain.functionLoader == nil)
        let eval = try RedisClientConfiguration(url: "redis://127.0.0.1:6379/0?script_calls=eval")
        #expect(eval.scriptCalls == .eval)
        let loader = try RedisClientConfiguration(url: "redis://app:pw@127.0.0.1/0?function_loader_user=loader&function_loader_password=l%20pw")
        #expect(loader.functionLoader == RedisCredentials(username: "loader", password: "l pw"))
        let cluster = try RedisClientConfiguration(
            url: "redis+cluster://app:pw@127.0.0.1:7000,127.0.0.1:7001?function_loader_user=loader&function_loader_password=x&script_calls=functions")
        #expect(cluster.isCluster && cluster.functionLoader == RedisCredentials(username: "loader", password: "x"))
        let unix = try RedisClientConfiguration(url: "unix:///tmp/r.sock?db=2&function_loader_password=y")
        #expect(unix.database == 2 && unix.functionLoader == RedisCredentials(username: nil, password: "y"))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("loader-\(UUID().uuidString)")
        try "  file secret\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try RedisClientConfiguration(url: "redis://app:pw@127.0.0.1/0?function_loader_user=loader&function_loader_password_file=\(file.path)")
        #expect(fromFile.functionLoader == RedisCredentials(username: "loader", password: "file secret"))
        for bad in [
            "redis://h/0?script_calls=lua", "redis://h/0?function_loader_user=loader", "redis+cluster://h:1?script_calls=EVAL",
            "redis://h/0?function_loader_password_file=/nonexistent/x",
            "redis://h/0?function_loader_password=a&function_loader_password_file=\(file.path)",
        ] {
            let error = #expect(throws: RedisError.self) { try RedisClientConfiguration(url: bad) }
            #expect(error?.code == .invalidURL, "\(bad)")
        }
    }
}
