import Crypto

/// The Redis key layout. Every key of one grant carries the grant's routing tag in `{}`, so all
/// keys a script touches hash to one Redis Cluster slot.
///
/// | key | type | holds |
/// |---|---|---|
/// | `<prefix>:{<tag>}:d:<id>` | hash | the grant, its only key; `<tag>` and `<id>` = 16 and 64 bits of HMAC(secret, user code), hex |
/// | `<prefix>:{bf}:a:<hmac>` | hash | failed user-code lookups of one caller bucket: `w` window start, `c` count (window TTL) |
/// | `<prefix>:{bf}:p:<hmac>` | hash | the same, of one signed-in person |
/// | `<prefix>:{bf}:t` | hash | the same, of everyone |
/// | `<prefix>:{r<family>}:f` | hash | a refresh-token family (see `RefreshScripts`); TTL = idle expiry, capped at the absolute one |
/// | `<prefix>:{r<family>}:x` | hash | denylisted access tokens of the family: `j:<jti>` → `exp` (s), `mx` latest expiry (ms) |
/// | `<prefix>:{x<tag>}:x:<hmac>` | hash | the same for one access token without a family; `<tag>`/`<hmac>` from HMAC(secret, jti) |
///
/// (The counters were strings under `{bf}:c:` and `{bf}:g` before the charge-before-answer
/// scheme; the new names keep a rolling upgrade from hitting `WRONGTYPE` on old keys.)
///
/// One key per grant: the user code leads to the record by its keyed hash (so a taken user code
/// is a record that exists), and the device code carries the same coordinates, hidden under the
/// secret (``DeviceCodeFormat``). The record's `h` (64 bits of HMAC(secret, device code),
/// base64url) is what a poll must match, so only the one device code of that grant polls it.
struct KeySchema: Sendable {
    let prefix: String
    /// HMAC-SHA256 keyed with the secret, before any data: every MAC here starts from a copy (the
    /// hash state is copy-on-write), so the key's pads are hashed once, not once per MAC (a poll
    /// opens its device code with one).
    private let keyed: HMAC<SHA256>

    init(prefix: String, secret: [UInt8]) {
        self.prefix = prefix
        self.keyed = HMAC<SHA256>(key: SymmetricKey(data: secret))
    }

    /// HMAC(secret, `data`).
    private func authenticationCode(for data: [UInt8]) -> HMAC<SHA256>.MAC {
        var hmac = keyed
        hmac.update(data: data)
        return hmac.finalize()
    }

    /// Routing tag and index id of a normalized user code.
    func userCodeDigest(_ normalized: String) -> (tag: String, id: String) {
        let mac = Array(authenticationCode(for: Array(("u:" + normalized).utf8)))
        return (hexString(mac[0..<2]), hexString(mac[2..<10]))
    }

    /// A fresh device code for the grant at (`tag`, `id`) (``DeviceCodeFormat``), and its digest
    /// (the record's `h`).
    func makeDeviceCode(tag: String, id: String) -> (code: String, digest: String) {
        let random = randomBytes(DeviceCodeFormat.randomBytes)
        let (pad, digest) = padAndDigest(random)
        return (Base64URL.encode(random + zip(hexBytes(tag + id), pad).map { $0 ^ $1 }), digest)
    }

    /// The record coordinates a device code carries and its digest (one HMAC), or `nil` when it
    /// is malformed. Without the secret the coordinates cannot be read, so someone who can read or
    /// write Redis but lacks it cannot tell which record a device code polls. A made-up or altered
    /// code decodes to some coordinates whose record (if any) holds another digest.
    func decode(deviceCode: String) -> (tag: String, id: String, digest: String)? {
        guard let bytes = DeviceCodeFormat.bytes(of: deviceCode),
            bytes.count == DeviceCodeFormat.randomBytes + DeviceCodeFormat.coordinateBytes
        else { return nil }
        let (pad, digest) = padAndDigest(Array(bytes[0..<DeviceCodeFormat.randomBytes]))
        let plain = hexString(zip(bytes[DeviceCodeFormat.randomBytes...], pad).map { $0 ^ $1 })
        return (String(plain.prefix(4)), String(plain.dropFirst(4)), digest)
    }

    /// HMAC(secret, random part): its first 80 bits hide the coordinates, the next 64 (base64url,
    /// 11 printable characters, so scripts and tools can pass it as an argument) are the digest a
    /// record holds of its device code (`h`). The digest depends on the random part only; the
    /// coordinates are bound to it by where the record is.
    private func padAndDigest(_ random: [UInt8]) -> (pad: [UInt8], digest: String) {
        var hmac = keyed
        hmac.update(data: Array("dc:".utf8))
        hmac.update(data: random)
        let mac = Array(hmac.finalize())
        return (
            Array(mac[0..<DeviceCodeFormat.coordinateBytes]),
            Base64URL.encode(Array(mac[DeviceCodeFormat.coordinateBytes..<DeviceCodeFormat.coordinateBytes + 8]))
        )
    }

    /// The MAC of an approval (record field `m`): 128 bits of HMAC(secret, grant id | user |
    /// client | scopes), hex. Written by the approving node, checked by the polling node before it
    /// hands out a token, so the fields a poll trusts cannot be set or changed by a Redis writer
    /// without the secret. Bound to the grant id (record coordinates and device-code digest), so
    /// it cannot be copied to another record, nor to a later grant of the same user code.
    func approvalMAC(grantID: String, userID: String, clientID: String, scopes: String) -> String {
        fieldsMAC(["m", grantID, userID, clientID, scopes])
    }

    /// 128 bits of HMAC(secret) over `parts`, hex; the first part names the kind of MAC.
    private func fieldsMAC(_ parts: [String]) -> String {
        var hmac = keyed
        for (index, part) in parts.enumerated() {
            // Length-prefixed, so no two field tuples give the same input.
            if index > 0 { hmac.update(data: Array("|\(part.utf8.count):".utf8)) }
            hmac.update(data: Array(part.utf8))
        }
        return hexString(Array(hmac.finalize())[0..<16])
    }

    /// The digest of the address a poll came from (`ro`, compared by the poll script before it
    /// hands a sealed answer out again): 64 bits of HMAC(secret, origin), hex; `""` when unknown.
    func originDigest(_ origin: String?) -> String {
        guard let origin, !origin.isEmpty else { return "" }
        let mac = authenticationCode(for: Array(("o:" + origin).utf8))
        return hexString(Array(mac)[0..<8])
    }

    /// Compares two MACs in time independent of where they differ.
    static func macsEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    static let deviceIDBytes = 12

    func devicePrefix(tag: some StringProtocol) -> String { "\(prefix):{\(tag)}:d:" }
    func deviceKey(tag: some StringProtocol, id: some StringProtocol) -> String { devicePrefix(tag: tag) + id }

    /// Brute-force counter of one caller (the caller itself, e.g. an IP, is hashed too).
    func callerFailuresKey(_ caller: String) -> String {
        let mac = Array(authenticationCode(for: Array(("c:" + caller).utf8)))
        return "\(prefix):{bf}:a:\(hexString(mac[0..<16]))"
    }

    /// Brute-force counter of one signed-in person (the user id is hashed too).
    func userFailuresKey(_ userID: String) -> String {
        let mac = Array(authenticationCode(for: Array(("p:" + userID).utf8)))
        return "\(prefix):{bf}:p:\(hexString(mac[0..<16]))"
    }

    var globalFailuresKey: String { "\(prefix):{bf}:t" }

    // MARK: Refresh tokens

    /// The family's record: every key of one family carries `{r<family>}`, so a rotation (family
    /// record and its denylist) is one slot in a Redis Cluster.
    func familyKey(_ familyID: some StringProtocol) -> String { "\(prefix):{r\(familyID)}:f" }

    /// The denylist of the family's access tokens (outlives the family record until they expire).
    func familyDenylistKey(_ familyID: some StringProtocol) -> String { "\(prefix):{r\(familyID)}:x" }

    /// The denylist entry of an access token that belongs to no family; its own slot (tag from
    /// the keyed hash of the `jti`), so revocations spread over the cluster.
    func accessTokenDenylistKey(tokenID: String) -> String {
        let mac = Array(authenticationCode(for: Array(("j:" + tokenID).utf8)))
        return "\(prefix):{x\(hexString(mac[0..<2]))}:x:\(hexString(mac[2..<14]))"
    }

    /// What Redis holds of a refresh token: 96 bits of HMAC(secret, token), hex. The token itself
    /// is never stored, and someone who reads Redis without the secret cannot tell which token a
    /// family's current id belongs to.
    func refreshTokenID(_ token: String) -> String {
        let mac = authenticationCode(for: Array(("r:" + token).utf8))
        return hexString(Array(mac)[0..<Self.deviceIDBytes])
    }

    /// The MAC a refresh token carries over its family id and random part (128 bits): the node
    /// checks it before it asks Redis, so only tokens this deployment issued can reach the
    /// reuse detection (a made-up token with a known family id cannot revoke a family).
    func refreshTokenMAC(familyID: some StringProtocol, random: some StringProtocol) -> [UInt8] {
        Array(Array(authenticationCode(for: Array("rt|\(familyID)|\(random)".utf8)))[0..<16])
    }

    /// The MAC of a family record (field `m`) over its id, client, user and scopes, so the fields
    /// a refresh trusts cannot be set or changed by a Redis writer without the secret.
    func familyMAC(familyID: String, clientID: String, userID: String, scopes: String) -> String {
        fieldsMAC(["f", familyID, clientID, userID, scopes])
    }

    /// Grant ids are `<tag><id><h>` (4 + 16 hex digits, 11 base64url characters): the record's
    /// key and the digest of its device code, so the id names one grant even when its user code
    /// is issued again later. Safe to log (no code can be worked out from it).
    func grantID(tag: some StringProtocol, id: some StringProtocol, digest: String) -> String { "\(tag)\(id)\(digest)" }

    /// The record key and device-code digest of a grant id, or `nil` when it is malformed.
    func grant(_ grantID: String) -> (key: String, digest: String)? {
        let utf8 = Array(grantID.utf8)
        guard utf8.count == 4 + 16 + 11, utf8[0..<20].allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }),
            Base64URL.decode(String(decoding: utf8[20...], as: UTF8.self).utf8) != nil
        else { return nil }
        return (
            deviceKey(tag: String(decoding: utf8[0..<4], as: UTF8.self), id: String(decoding: utf8[4..<20], as: UTF8.self)),
            String(decoding: utf8[20...], as: UTF8.self)
        )
    }
}

/// The bytes of an even-length hex string (only ever called on hex this file made).
private func hexBytes(_ hex: String) -> [UInt8] { bytes(fromHex: hex) ?? [] }
