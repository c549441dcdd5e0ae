import Crypto

/// User codes per RFC 8628 §6.1: 8 characters from a 20-consonant alphabet, shown `XXXX-XXXX`.
public enum UserCode {
    /// The alphabet: no vowels (no words), no look-alike digits.
    public static let alphabet: [UInt8] = Array("BCDFGHJKLMNPQRSTVWXZ".utf8)
    /// Characters in a user code.
    public static let length = 8
    private static let isInAlphabet: [Bool] = {
        var table = [Bool](repeating: false, count: 256)
        for character in alphabet { table[Int(character)] = true }
        return table
    }()

    /// A fresh random user code (≈34.6 bits), normalized (no dash).
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let characters = (0..<length).map { _ in alphabet[Int(generator.next(upperBound: UInt32(alphabet.count)))] }
        return String(decoding: characters, as: UTF8.self)
    }

    /// Normalizes what a person typed: upper-cases, then drops every character outside the
    /// alphabet (dashes, spaces, vowels, digits). Returns `nil` unless exactly 8 remain.
    ///
    /// Input longer than 64 bytes is refused outright, so huge inputs cost nothing.
    public static func normalize(_ input: String) -> String? {
        var kept: [UInt8] = []
        kept.reserveCapacity(length)
        var seen = 0
        for byte in input.utf8 {
            seen += 1
            if seen > 64 { return nil }
            let upper = (byte >= 97 && byte <= 122) ? byte - 32 : byte
            if isInAlphabet[Int(upper)] {
                kept.append(upper)
                if kept.count > length { return nil }
            }
        }
        return kept.count == length ? String(decoding: kept, as: UTF8.self) : nil
    }

    /// The display form `XXXX-XXXX` of a normalized code.
    public static func display(_ normalized: String) -> String {
        let characters = Array(normalized)
        guard characters.count == length else { return normalized }
        return String(characters[0..<4]) + "-" + String(characters[4..<8])
    }
}

/// Device codes: 256 random bits, base64url, prefixed with the grant's routing tag.
///
/// Format: `<tag>.<43 base64url characters>`. The tag (4 hex digits) is the Redis hash tag of
/// both of the grant's keys, so a poll finds its record with no extra lookup ("self-routing"),
/// and in a Redis Cluster every script's keys share one slot.
public enum DeviceCodeFormat {
    static let tagLength = 4

    /// A fresh device code for `tag`.
    static func generate(tag: String) -> String {
        tag + "." + base64URL(randomBytes(32))
    }

    /// The routing tag of a device code, or `nil` when the code is malformed.
    static func tag(of deviceCode: String) -> Substring? {
        let utf8 = deviceCode.utf8
        guard utf8.count == tagLength + 1 + 43 else { return nil }
        let tag = deviceCode.prefix(tagLength)
        guard tag.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }),
              deviceCode.utf8.dropFirst(tagLength).first == UInt8(ascii: ".") else { return nil }
        guard deviceCode.utf8.dropFirst(tagLength + 1).allSatisfy({ isBase64URL($0) }) else { return nil }
        return tag
    }

    private static func isBase64URL(_ byte: UInt8) -> Bool {
        (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || (byte >= 48 && byte <= 57) || byte == 45 || byte == 95
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index + 3 <= bytes.count {
            let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
            output += [table[Int(value >> 18 & 63)], table[Int(value >> 12 & 63)], table[Int(value >> 6 & 63)], table[Int(value & 63)]]
            index += 3
        }
        let rest = bytes.count - index
        if rest == 1 {
            let value = UInt32(bytes[index]) << 16
            output += [table[Int(value >> 18 & 63)], table[Int(value >> 12 & 63)]]
        } else if rest == 2 {
            let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8
            output += [table[Int(value >> 18 & 63)], table[Int(value >> 12 & 63)], table[Int(value >> 6 & 63)]]
        }
        return String(decoding: output, as: UTF8.self)
    }
}

func hexString<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var output: [UInt8] = []
    for byte in bytes {
        output.append(digits[Int(byte >> 4)])
        output.append(digits[Int(byte & 15)])
    }
    return String(decoding: output, as: UTF8.self)
}

/// `count` bytes from the system's cryptographic generator (device codes, refresh tokens, ids).
func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}
