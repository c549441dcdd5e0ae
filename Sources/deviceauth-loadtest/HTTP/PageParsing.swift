import Foundation
import NIOHTTP1
import RedisClient

/// Reads hidden form fields from the server-rendered pages.
enum HTMLForm {
    /// The `value` of the first field named `name`: the first `value="…"` after `name="<name>"`.
    /// Searched in the page's UTF-8 bytes: Foundation's `range(of:)` (bridged to CFString, UTF-16)
    /// was a fifth of the open model's CPU per request.
    static func hiddenValue(_ name: String, in html: String) -> String? {
        var html = html
        let marker = Array("name=\"\(name)\"".utf8)
        return html.withUTF8 { bytes -> String? in
            guard let nameEnd = end(of: marker, in: bytes, from: 0),
                let valueStart = end(of: valuePrefix, in: bytes, from: nameEnd),
                let valueEnd = bytes[valueStart...].firstIndex(of: UInt8(ascii: "\""))
            else { return nil }
            return unescape(String(decoding: UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd]), as: UTF8.self))
        }
    }

    static let valuePrefix = Array("value=\"".utf8)

    /// The index just past the first occurrence of `needle` in `bytes` at or after `start`.
    static func end(of needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard !needle.isEmpty, needle.count <= bytes.count else { return nil }
        var index = start
        while index <= bytes.count - needle.count {
            if bytes[index] == needle[0] {
                var matched = 1
                while matched < needle.count && bytes[index + matched] == needle[matched] { matched += 1 }
                if matched == needle.count { return index + matched }
            }
            index += 1
        }
        return nil
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var result = text
        for (entity, character) in [
            ("&quot;", "\""), ("&#39;", "'"), ("&#x27;", "'"), ("&#x3D;", "="), ("&#61;", "="), ("&lt;", "<"), ("&gt;", ">"),
            ("&#x2F;", "/"), ("&#47;", "/"), ("&#x60;", "`"), ("&amp;", "&"),
        ] {
            result = result.replacingOccurrences(of: entity, with: character)
        }
        return result
    }
}

/// Reads a JWT's claims without verifying it (the harness checks who it names, not who signed it).
enum JWT {
    static func claims(of token: String) -> [String: Any]? {
        let parts = token.split(separator: ".")
        guard parts.count == 3 else { return nil }
        var base64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    /// The `sub` claim. A compact payload's `"sub":"…"` is read from the decoded bytes; any other
    /// shape (spaces, escapes, no such member) goes through ``claims(of:)``.
    static func subject(of token: String) -> String? {
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var base64 = parts[1].map { $0 == UInt8(ascii: "-") ? UInt8(ascii: "+") : $0 == UInt8(ascii: "_") ? UInt8(ascii: "/") : $0 }
        while base64.count % 4 != 0 { base64.append(UInt8(ascii: "=")) }
        guard let payload = Data(base64Encoded: Data(base64)) else { return nil }
        let bytes = [UInt8](payload)
        let marker = Array("\"sub\":\"".utf8)
        if let start = bytes.indices.first(where: { bytes[$0...].starts(with: marker) }).map({ $0 + marker.count }),
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")), !bytes[start..<end].contains(UInt8(ascii: "\\"))
        {
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
        return claims(of: token)?["sub"] as? String
    }
}
