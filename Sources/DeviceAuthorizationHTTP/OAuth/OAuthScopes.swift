/// The `scope` parameter (RFC 6749 §3.3): space-separated scope tokens.
enum OAuthScopes {
    /// The scope tokens of a `scope` parameter, deduplicated, each checked against RFC 6749 §3.3.
    static func parse(_ text: String) throws(OAuthError) -> [String] {
        var scopes: [String] = []
        for token in text.split(separator: " ", omittingEmptySubsequences: true).map(String.init) {
            guard isScopeToken(token) else { throw OAuthError("invalid_scope", "the scope parameter is malformed") }
            if !scopes.contains(token) { scopes.append(token) }
        }
        return scopes
    }

    /// The scopes to grant: the requested ones (deduplicated, each allowed), or the client's defaults.
    static func resolve(_ requested: String?, for client: RegisteredClient) throws(OAuthError) -> [String] {
        guard let requested else { return client.defaultScopes ?? client.allowedScopes }
        let scopes = try parse(requested)
        if let denied = scopes.first(where: { !client.allowedScopes.contains($0) }) {
            throw OAuthError("invalid_scope", "scope '\(String(denied.prefix(64)))' is not allowed for this client")
        }
        return scopes.isEmpty ? (client.defaultScopes ?? client.allowedScopes) : scopes
    }

    /// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
    static func isScopeToken(_ token: String) -> Bool {
        token.utf8.allSatisfy { $0 == 0x21 || (0x23...0x5B).contains($0) || (0x5D...0x7E).contains($0) }
    }
}
