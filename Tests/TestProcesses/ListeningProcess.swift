import Foundation

/// Polls every 25 ms until `process` itself listens on 127.0.0.1:`port` (`true`), `process` exits
/// or `attempts` run out (`false`), suspending in between (a blocked thread of Swift's cooperative
/// pool, one per core, would hold up every other test in the process).
///
/// "Itself": a port from ``freeLoopbackPort()`` can be taken by another test's server before the
/// process binds it; the process then exits with "Address already in use" while the other server
/// accepts connections on the port. A connect alone took that server for the process (a sentinel
/// that never ran, and a topology that never settled), so the listening socket is looked up in
/// `/proc/net/tcp` and must be one of `process`'s file descriptors.
public func waitUntilListening(port: Int, process: Process, attempts: Int) async throws -> Bool {
    for _ in 0..<attempts {
        guard process.isRunning else { return false }
        if listens(pid: process.processIdentifier, port: port) { return true }
        try await Task.sleep(for: .milliseconds(25))
    }
    return false
}

/// Whether process `pid` holds a socket listening on TCP port `port` of 127.0.0.1 or any address.
public func listens(pid: Int32, port: Int) -> Bool {
    let inodes = listeningSocketInodes(port: port)
    guard !inodes.isEmpty,
        let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
    else { return false }
    return descriptors.contains { descriptor in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)"),
            target.hasPrefix("socket:["), target.hasSuffix("]")
        else { return false }
        return inodes.contains(String(target.dropFirst("socket:[".count).dropLast()))
    }
}

/// The inodes of the IPv4 sockets in state LISTEN on `port` (`/proc/net/tcp`: `sl local_address
/// rem_address st … uid timeout inode`, addresses as `HEXADDR:HEXPORT`, LISTEN is `0A`).
private func listeningSocketInodes(port: Int) -> Set<String> {
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return [] }
    let portSuffix = ":" + String(format: "%04X", port)
    var inodes = Set<String>()
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 9, fields[1].hasSuffix(portSuffix), fields[3] == "0A" else { continue }
        inodes.insert(String(fields[9]))
    }
    return inodes
}
