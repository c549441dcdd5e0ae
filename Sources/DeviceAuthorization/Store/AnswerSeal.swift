import Crypto

/// Seals a token answer before it is kept in Redis for the retry window (record field `t`):
/// AES-256-GCM under a key derived from the node secret (HKDF-SHA256), with the grant id as
/// associated data, so the answer is never in Redis in plaintext, and a sealed answer copied into
/// another record does not open there. Layout: nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes).
struct AnswerSeal: Sendable {
    private let key: SymmetricKey

    init(secret: [UInt8]) {
        key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: secret), salt: Array("deviceauth".utf8),
            info: Array("token-answer-v1".utf8), outputByteCount: 32)
    }

    func seal(_ answer: [UInt8], grantID: String) throws -> [UInt8] {
        guard let combined = try AES.GCM.seal(answer, using: key, authenticating: Array(grantID.utf8)).combined else {
            throw DeviceAuthorizationError(.invalidArgument, "could not seal the token answer")
        }
        return Array(combined)
    }

    /// The answer, or `nil` when `sealed` was not sealed for `grantID` under this secret.
    func open(_ sealed: [UInt8], grantID: String) -> [UInt8]? {
        guard let box = try? AES.GCM.SealedBox(combined: sealed),
            let answer = try? AES.GCM.open(box, using: key, authenticating: Array(grantID.utf8))
        else { return nil }
        return Array(answer)
    }
}
