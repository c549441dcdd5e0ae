import Foundation

/// How a grant keeps the address its device asked from (record field `o`, shown on the
/// confirmation page) in few bytes: an IPv4 address in its usual form as 5 bytes (`0x01` and the
/// address), an IPv6 address in its canonical form as 17 (`0x02` and the address), anything else
/// as its UTF-8 bytes (behind a `0x00` when it starts with a control byte, so it is never taken for
/// an address). A pending grant is mostly its record, so this is a tenth of what it costs.
enum OriginEncoding {
    static func encode(_ origin: String) -> [UInt8] {
        if let packed = pack(origin, family: AF_INET, size: 4, marker: 1) { return packed }
        if let packed = pack(origin, family: AF_INET6, size: 16, marker: 2) { return packed }
        let bytes = Array(origin.utf8)
        if let first = bytes.first, first < 0x20 { return [0] + bytes }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> String {
        switch (bytes.first, bytes.count) {
        case (1, 5): return unpack(Array(bytes.dropFirst()), family: AF_INET) ?? ""
        case (2, 17): return unpack(Array(bytes.dropFirst()), family: AF_INET6) ?? ""
        case (0, _): return String(decoding: bytes.dropFirst(), as: UTF8.self)
        default: return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The address's bytes behind `marker`, when `text` is an address of `family` written exactly
    /// as it is printed back (so decoding gives the same text).
    private static func pack(_ text: String, family: Int32, size: Int, marker: UInt8) -> [UInt8]? {
        var address = [UInt8](repeating: 0, count: size)
        guard text.utf8.count <= 45, inet_pton(family, text, &address) == 1, unpack(address, family: family) == text else { return nil }
        return [marker] + address
    }

    private static func unpack(_ address: [UInt8], family: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        guard inet_ntop(family, address, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
