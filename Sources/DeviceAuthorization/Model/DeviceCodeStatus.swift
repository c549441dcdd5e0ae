/// Where a device code is in its life, as the reference model names it.
///
/// `pending` → `authorized` (a person approved), `pending` → `denied` (a person denied),
/// `pending` → `expired` (time ran out). Once a code leaves `pending` it never changes again.
public enum DeviceCodeStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case pending
    case authorized
    case denied
    case expired
}
