import Foundation

/// Secrets read from files (a Kubernetes Secret volume, a Docker secret, a file only the service
/// user can read) rather than argv, where every local user can read them in `ps`.
public enum SecretFile {
    /// The bytes of the secret in `path`, without one trailing line break (`echo` and most editors
    /// add one; it is not part of the secret).
    /// - Parameters:
    ///   - path: the file.
    ///   - setting: the setting that named the file, for the error message.
    ///   - minimumLength: the fewest bytes accepted (`0`: any, but never empty).
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/invalidConfiguration``
    ///   when the file cannot be read, is empty or is too short.
    public static func read(_ path: String, setting: String, minimumLength: Int = 0) throws -> [UInt8] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "\(setting): cannot read \(path)", underlying: error)
        }
        var bytes = Array(data)
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard !bytes.isEmpty else {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "\(setting): \(path) is empty")
        }
        guard bytes.count >= minimumLength else {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "\(setting): the secret in \(path) must be at least \(minimumLength) bytes")
        }
        return bytes
    }
}
