import DeviceAuthorization
import Foundation

extension Data {
    /// base64url without padding (RFC 4648 §5), as JOSE and cookies want it.
    var base64URLEncoded: String { Base64URL.encode(self) }

    /// Decodes base64url with or without padding.
    init?(base64URLEncoded text: some StringProtocol) {
        var utf8 = Substring(text).utf8[...]
        for _ in 0..<2 where utf8.last == UInt8(ascii: "=") { utf8 = utf8.dropLast() }
        guard let bytes = Base64URL.decode(utf8) else { return nil }
        self.init(bytes)
    }
}
