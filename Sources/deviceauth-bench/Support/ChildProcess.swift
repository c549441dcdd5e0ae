import Foundation

/// Helpers to find and run the external tools a benchmark compares against.
enum ChildProcess {
    /// An error from finding or running a child process.
    struct Failure: Error, CustomStringConvertible {
        /// What went wrong, for a person.
        var description: String
    }

    /// The output of a finished child process.
    struct Output: Sendable {
        /// The exit status (or the signal number when ``terminatedBySignal`` is set).
        var status: Int32
        /// Whether a signal ended the process.
        var terminatedBySignal: Bool
        /// Everything it wrote to standard output.
        var standardOutput: String
        /// Everything it wrote to standard error.
        var standardError: String
    }

    /// The absolute path of `name`: `explicit` if given, else the first executable `name` on `PATH`.
    /// - Throws: ``Failure`` when it cannot be found or is not executable.
    static func locate(_ name: String, explicit: String? = nil) throws -> String {
        let fileManager = FileManager.default
        if let explicit {
            guard fileManager.isExecutableFile(atPath: explicit) else {
                throw Failure(description: "\(explicit) is not an executable file")
            }
            return explicit
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if fileManager.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw Failure(description: "\(name) was not found on PATH; install it (Debian: redis-server, redis-tools) or pass its path")
    }

    /// Waits until `process` (a server named `name`) accepts connections on loopback `port`.
    /// - Throws: ``Failure`` (with `log()`, such as the tail of its log) when it exits first or
    ///   does not listen within `timeout`.
    static func waitUntilListening(_ process: Process, name: String, port: Int, timeout: Duration, log: () -> String) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw Failure(description: "\(name) exited with status \(process.terminationStatus) on port \(port): \(log())")
            }
            if canConnect(port: port) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw Failure(description: "\(name) did not listen on 127.0.0.1:\(port) within \(timeout): \(log())")
    }

    /// Sends SIGTERM and waits for `process` to exit, with SIGKILL after `grace`.
    static func terminate(_ process: Process, grace: Duration) async {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        }
    }

    /// Runs `executable` with `arguments` to completion without blocking a cooperative thread,
    /// collecting its output through temporary files (so a chatty child can never fill a pipe).
    static func run(_ executable: String, _ arguments: [String]) async throws -> Output {
        let fileManager = FileManager.default
        let directory = fileManager.temporaryDirectory.appendingPathComponent("deviceauth-bench-\(UUID().uuidString)")
        try fileManager.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? fileManager.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        guard fileManager.createFile(atPath: outURL.path, contents: nil),
            fileManager.createFile(atPath: errURL.path, contents: nil)
        else {
            throw Failure(description: "cannot create output files in \(directory.path)")
        }
        let outHandle = try FileHandle(forWritingTo: outURL)
        let errHandle = try FileHandle(forWritingTo: errURL)
        defer {
            try? outHandle.close()
            try? errHandle.close()
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = outHandle
        process.standardError = errHandle
        let (status, reason) = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Int32, Process.TerminationReason), any Error>) in
            process.terminationHandler = { finished in
                continuation.resume(returning: (finished.terminationStatus, finished.terminationReason))
            }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: Failure(description: "cannot run \(executable): \(error)"))
            }
        }
        return Output(
            status: status,
            terminatedBySignal: reason == .uncaughtSignal,
            standardOutput: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            standardError: (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        )
    }
}
