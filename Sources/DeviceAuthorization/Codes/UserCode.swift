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

/// Device codes: 256 random bits and the grant's record coordinates, hidden, base64url.
///
/// Format: 56 base64url characters of `random (32 bytes) ‖ coordinates ⊕ pad (10 bytes)`, where
/// the coordinates are the grant's routing tag (2 bytes) and record id (8 bytes), both from the
/// keyed hash of its user code (``KeySchema/userCodeDigest(_:)``), and the pad is 80 bits of
/// HMAC(secret, random). So a poll finds its one record with no lookup ("self-routing"; in a
/// Redis Cluster the record's slot), and without the secret nobody can tell from a device code
/// which record it polls (see `KeySchema.decode(deviceCode:)`).
public enum DeviceCodeFormat {
    static let length = 56
    static let randomBytes = 32
    static let coordinateBytes = 10

    /// The decoded bytes of a well-formed device code, or `nil`.
    static func bytes(of deviceCode: String) -> [UInt8]? {
        guard deviceCode.utf8.count == length else { return nil }
        return Base64URL.decode(deviceCode.utf8)
    }
}
