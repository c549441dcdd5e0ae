import Testing

@testable import DeviceAuthorization

@Suite("User codes and device codes")
struct CodesTests {
    @Test func generatedUserCodesUseTheRFCAlphabetAndLength() {
        for _ in 0..<200 {
            let code = UserCode.generate()
            #expect(code.count == 8)
            #expect(code.utf8.allSatisfy { UserCode.alphabet.contains($0) })
            #expect(UserCode.normalize(UserCode.display(code)) == code)
        }
    }

    @Test(arguments: [
        ("bcdf-ghjk", "BCDFGHJK"), ("BCDFGHJK", "BCDFGHJK"), (" bcdf ghjk ", "BCDFGHJK"),
        ("b-c-d-f-g-h-j-k", "BCDFGHJK"), ("BCDF–GHJK", "BCDFGHJK"), ("Bcdf.Ghjk\n", "BCDFGHJK"),
    ])
    func normalizationIgnoresCaseAndCharactersOutsideTheAlphabet(input: String, expected: String) {
        #expect(UserCode.normalize(input) == expected)
    }

    @Test(arguments: ["", "BCDF-GHJ", "BCDF-GHJKL", "AEIOU123", String(repeating: "B", count: 10_000), "bcdf-ghjk" + String(repeating: "-", count: 100)])
    func normalizationRefusesWrongLengthsAndHugeInput(input: String) {
        #expect(UserCode.normalize(input) == nil)
    }

    @Test func deviceCodesCarryTheirRecordHiddenUnderTheSecretAnd256RandomBits() {
        let keys = KeySchema(prefix: "t", secret: Array("a-test-secret-of-at-least-32-bytes!!".utf8))
        let (code, digest) = keys.makeDeviceCode(tag: "0a1f", id: "0123456789abcdef")
        #expect(code.count == 56, "42 bytes (32 random, 10 of record coordinates), base64url")
        #expect(keys.decode(deviceCode: code).map { [$0.tag, $0.id, $0.digest] } == ["0a1f", "0123456789abcdef", digest])
        let (again, againDigest) = keys.makeDeviceCode(tag: "0a1f", id: "0123456789abcdef")
        #expect(again != code && again.suffix(14) != code.suffix(14), "the coordinates are hidden under a fresh pad each time")
        #expect(!code.contains("0a1f") && !code.contains("0123456789abcdef"))
        // Another secret reads other coordinates: the record cannot be found without the secret.
        let other = KeySchema(prefix: "t", secret: Array("another-secret-of-at-least-32-bytes!".utf8))
        #expect(other.decode(deviceCode: code).map { [$0.tag, $0.id] } != ["0a1f", "0123456789abcdef"])
        #expect(digest.count == 11 && digest != againDigest && other.decode(deviceCode: code)?.digest != digest)
        let malformed: [String] = [
            "", "0a1f", code + "x", String(code.dropLast()), String(code.dropLast()) + "!", String(code.dropLast()) + "=",
            "0a1f." + String(code.dropFirst(5)),
        ]
        for text in malformed {
            #expect(keys.decode(deviceCode: text) == nil, "\(text)")
        }
    }

    @Test(
        "the origin a grant keeps: IPv4 in 5 bytes, canonical IPv6 in 17, anything else as typed; every one reads back as it was",
        arguments: [
            ("203.0.113.254", 5), ("127.0.0.1", 5), ("2001:db8::1", 17), ("::1", 17), ("2001:DB8::1", 11), ("2001:db8:0::1", 13),
            ("203.0.113.7:80", 14), ("unknown", 7), ("", 0), ("\u{1}abcd", 6), ("\u{2}", 2), ("\u{0}x", 3), ("é", 2), ("01.2.3.4", 8),
        ])
    func originEncoding(origin: String, size: Int) {
        let encoded = OriginEncoding.encode(origin)
        #expect(encoded.count == size)
        #expect(OriginEncoding.decode(encoded) == origin)
    }
}
