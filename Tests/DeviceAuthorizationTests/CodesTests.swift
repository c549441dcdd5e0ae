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

    @Test func deviceCodesCarryTheirTagAnd256RandomBits() {
        let code = DeviceCodeFormat.generate(tag: "0a1f")
        #expect(code.hasPrefix("0a1f."))
        #expect(code.count == 48, "4 tag + 1 dot + 43 base64url characters = 256 bits")
        #expect(DeviceCodeFormat.tag(of: code) == "0a1f")
        #expect(DeviceCodeFormat.generate(tag: "0a1f") != code)
        for malformed in ["", "0a1f", "zzzz." + String(code.dropFirst(5)), code + "x", "0A1F." + String(code.dropFirst(5)), String(code.dropLast()) + "!"] {
            #expect(DeviceCodeFormat.tag(of: malformed) == nil)
        }
    }
}
