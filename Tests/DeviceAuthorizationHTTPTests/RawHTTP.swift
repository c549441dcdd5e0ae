import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A bare TCP HTTP/1.1 client for requests no well-behaved client library would send: oversized
/// header blocks, bodies that never end, bytes that are not UTF-8 in the request line.
enum RawHTTP {
    struct Reply {
        /// The status code of the first response, or `nil` when the server closed without one.
        var status: Int?
        var head: String
        var body: String
        func header(_ name: String) -> String? {
            for line in head.split(separator: "\r\n").dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2, parts[0].lowercased() == name.lowercased() { return parts[1].trimmingCharacters(in: .whitespaces) }
            }
            return nil
        }
    }

    /// ``exchange(port:head:bodyChunks:timeout:)`` on a thread of its own: the blocking socket calls
    /// must not hold a thread of Swift's cooperative pool, which the server under test needs.
    static func request(port: Int, head: [UInt8], bodyChunks: [[UInt8]] = [], timeout: Duration = .seconds(10)) async throws -> Reply {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try exchange(port: port, head: head, bodyChunks: bodyChunks, timeout: timeout) })
            }
            thread.start()
        }
    }

    /// Sends `head` (request line and headers, without the final blank line; it is added), then
    /// `bodyChunks` one after another (the server may answer and close early: send errors are
    /// ignored), and reads until the server closes the connection or `timeout` passes.
    static func exchange(port: Int, head: [UInt8], bodyChunks: some Sequence<[UInt8]> = [[UInt8]](), timeout: Duration = .seconds(10)) throws -> Reply {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var seconds = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        var open = sendAll(fd, head + Array("\r\n\r\n".utf8))
        for chunk in bodyChunks where open {
            open = sendAll(fd, chunk)
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
            if received.count > 4 << 20 || isComplete(received) { break }
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { return Reply(status: nil, head: text, body: "") }
        let head = String(text[..<end.lowerBound])
        let statusLine = head.split(separator: "\r\n").first ?? ""
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        return Reply(status: status, head: head, body: String(text[end.upperBound...]))
    }

    /// Whether `bytes` hold one whole response (head and `Content-Length` bytes of body), so the
    /// client need not wait for the server to close a kept-alive connection.
    private static func isComplete(_ bytes: [UInt8]) -> Bool {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4, let end = (0...(bytes.count - 4)).first(where: { Array(bytes[$0..<$0 + 4]) == separator }) else { return false }
        let head = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
        guard let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
            let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        else { return false }
        return bytes.count - (end + 4) >= length
    }

    /// Writes everything; `false` once the peer stopped reading (reset, closed, timed out).
    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return false }
            offset += sent
        }
        return true
    }
}
