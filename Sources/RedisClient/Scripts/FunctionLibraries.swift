import Logging
import Synchronization

/// Loads the one-function libraries of ``RedisScript``s on one node (`FUNCTION LOAD REPLACE`).
///
/// Loads are rare (a new or restarted node without persistence, a `FUNCTION FLUSH`), but when
/// they happen every caller of the missing function learns it at once; concurrent loads of one
/// library on one node share a single `FUNCTION LOAD`.
final class FunctionLibraryLoader: Sendable {
    private let configuration: RedisClientConfiguration
    private let logger: Logger
    private let inFlight = Mutex<[String: Task<Void, any Error>]>([:])

    /// - Parameter configuration: the node's connection settings (endpoint, user, TLS, timeouts).
    init(configuration: RedisClientConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Loads `script`'s library on the node: as ``RedisClientConfiguration/functionLoader`` on a
    /// short-lived connection when one is configured, else on `connection`.
    /// - Throws: ``RedisError``; a user without `+function|load` gets a ``RedisError/Code/server``
    ///   error that says which setting to change.
    func load(_ script: RedisScript, using connection: @escaping @Sendable () -> RedisConnection) async throws {
        let task: Task<Void, any Error> = inFlight.withLock { tasks in
            if let running = tasks[script.sha1] { return running }
            let task = Task { [self] in
                defer { _ = inFlight.withLock { $0.removeValue(forKey: script.sha1) } }
                try await loadNow(script, using: connection)
            }
            tasks[script.sha1] = task
            return task
        }
        try await task.value
    }

    private func loadNow(_ script: RedisScript, using connection: () -> RedisConnection) async throws {
        let command = RedisCommand("FUNCTION", "LOAD", "REPLACE", script.library).encoded
        do {
            if let loader = configuration.functionLoader {
                var loaderConfiguration = configuration
                loaderConfiguration.username = loader.username
                loaderConfiguration.password = loader.password
                let loaderConnection = ConnectionFactory.oneOff(configuration: loaderConfiguration, logger: logger)
                defer { loaderConnection.shutdown() }
                _ = try await loaderConnection.send(command)
            } else {
                _ = try await connection().send(command)
            }
            logger.debug("loaded Redis function library", metadata: ["function": "\(script.functionName)"])
        } catch let error as RedisError where error.serverErrorPrefix == "NOPERM" {
            let user = configuration.functionLoader.map { $0.username ?? "default" } ?? configuration.username ?? "default"
            throw RedisError(
                .server,
                "NOPERM the Redis user '\(user)' may not load function libraries (FUNCTION LOAD) on \(configuration.endpoint): "
                    + "give the function loader user +function|load, or load the product's functions beforehand (\(error.message))", underlying: error)
        }
    }
}
