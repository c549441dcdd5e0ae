import Foundation
import Logging
import Metrics
import RedisClient

/// The verification page's side of the store: looking a user code up (charged against the
/// person's guess budgets) and deciding it (approve or deny, with the durability wait).
extension DeviceCodeStore {
    // MARK: - Verification page

    /// Finds the grant of a user code for the verification page; ``lookup(userCode:attempt:)``
    /// with one caller bucket and no signed-in person.
    public func lookup(userCode: String, caller: String) async throws -> DeviceCode {
        try await lookup(userCode: userCode, attempt: LookupAttempt(callers: [caller]))
    }

    /// Finds the grant of a user code for the verification page, within exact brute-force limits.
    ///
    /// The input is normalized (case-insensitive; dashes, spaces and other characters outside
    /// the alphabet ignored). Every lookup is **charged before it is answered**: one script checks
    /// each of `attempt.callers` (limit ``DeviceCodeStoreConfiguration/maxFailuresPerCaller``),
    /// `attempt.userID` (``DeviceCodeStoreConfiguration/maxFailuresPerUser``) and the global
    /// budget (``DeviceCodeStoreConfiguration/maxFailuresGlobal``), and counts the attempt in all
    /// of them only if all have room. Then the code is looked up; a lookup that finds its grant
    /// gives its own charge back (so people are not locked out by their own successes), and
    /// nothing else: a success resets no counter.
    ///
    /// Why this is exact although, in a Redis Cluster, the counters (`{bf}`) and the grant (its
    /// own tag) are in different slots and so need two scripts: a charge is admitted only while
    /// its counters have room, atomically with counting it, and every lookup answered "not found"
    /// holds an admitted charge that is never given back. So per window no more than `limit`
    /// wrong lookups get an answer other than ``DeviceAuthorizationError/Code/tooManyAttempts``,
    /// across any number of nodes and under any interleaving. A refund only reopens room that a
    /// found code took, in the window that charge was counted in. When Redis fails between the
    /// two steps the charge stays (never the other way round).
    /// - Returns: the grant, whatever its status (the page shows "already used" for decided ones).
    /// - Throws: ``DeviceAuthorizationError`` with ``DeviceAuthorizationError/Code/invalidUserCode``
    ///   (not charged: no code was tried), ``DeviceAuthorizationError/Code/tooManyAttempts`` (with
    ///   `retryAfter`), ``DeviceAuthorizationError/Code/notFound`` or
    ///   ``DeviceAuthorizationError/Code/expired``; ``RedisError`` (also when Redis is at `maxmemory`).
    public func lookup(userCode: String, attempt: LookupAttempt) async throws -> DeviceCode {
        guard let normalized = UserCode.normalize(userCode) else {
            throw DeviceAuthorizationError(.invalidUserCode, "a user code has 8 letters from BCDFGHJKLMNPQRSTVWXZ")
        }
        let charge = try await chargeAttempt(attempt)
        let (tag, id) = keys.userCodeDigest(normalized)
        guard let code = try await read(tag: tag, id: id, digest: "", userCode: normalized) else {
            throw DeviceAuthorizationError(.notFound, "no pending request has this code")
        }
        try await client.eval(StoreScripts.releaseFailures, keys: charge.keys, arguments: charge.windows)
        if code.currentStatus == .expired {
            throw DeviceAuthorizationError(.expired, "this code has expired", status: .expired)
        }
        return code
    }

    /// Counts one attempt in every counter of `attempt` if all have room (else throws
    /// `tooManyAttempts`, nothing counted). Returns the keys and the window each was counted in.
    private func chargeAttempt(_ attempt: LookupAttempt) async throws -> (keys: [String], windows: [String]) {
        enum Kind { case caller, user, global }
        var counters: [(key: String, limit: Int, window: Duration, kind: Kind)] = []
        var seen = Set<String>()
        for caller in attempt.callers where seen.insert(caller).inserted {
            counters.append((keys.callerFailuresKey(caller), configuration.maxFailuresPerCaller, configuration.callerWindow, .caller))
        }
        if let userID = attempt.userID {
            counters.append((keys.userFailuresKey(userID), configuration.maxFailuresPerUser, configuration.userWindow, .user))
        }
        counters.append((keys.globalFailuresKey, configuration.maxFailuresGlobal, configuration.globalWindow, .global))
        var arguments: [any RedisArgument] = []
        for counter in counters {
            arguments.append(counter.limit)
            arguments.append(max(1, counter.window.milliseconds))
        }
        let reply = try await client.eval(StoreScripts.chargeFailures, keys: counters.map(\.key), arguments: arguments).array ?? []
        let which = reply.first?.int ?? 0
        guard which == 0, reply.count == counters.count + 1 else {
            metrics.lockouts.increment()
            let retry = Duration.milliseconds(max(1, reply.count > 1 ? (reply[1].int ?? 1000) : 1000))
            let kind = counters.indices.contains(which - 1) ? counters[which - 1].kind : .global
            let message =
                switch kind {
                case .caller: "too many wrong codes from this caller"
                case .user: "too many wrong codes from this account"
                case .global: "too many wrong codes are being tried; try again later"
                }
            throw DeviceAuthorizationError(.tooManyAttempts, message, retryAfter: retry)
        }
        return (counters.map(\.key), reply.dropFirst().map { value in value.int.map(String.init) ?? value.string ?? "" })
    }

    /// Approves the pending grant of a user code for `userID` (compare-and-set from pending).
    /// - Parameters:
    ///   - grantID: the ``DeviceCode/grantID`` the confirmation page showed. When given, the
    ///     decision is refused with ``DeviceAuthorizationError/Code/grantChanged`` unless the user
    ///     code still leads to exactly that grant (checked in the deciding script), so a person
    ///     never approves a grant they were not shown.
    /// - Throws: ``DeviceAuthorizationError`` with ``DeviceAuthorizationError/Code/notFound``,
    ///   ``DeviceAuthorizationError/Code/expired``, ``DeviceAuthorizationError/Code/alreadyDecided``
    ///   or ``DeviceAuthorizationError/Code/grantChanged`` (also when the record's client or scopes
    ///   changed between the read and the decision); nothing changes then.
    ///
    /// The approval carries a MAC under the node secret over the record id, `userID`, the client id
    /// and the scopes (field `m`); ``poll(deviceCode:clientID:)`` checks it before it hands out a
    /// token. So this costs one round trip more than a denial: the node reads the record's client
    /// and scopes first, and the deciding script checks they are unchanged.
    public func approve(userCode: String, userID: String, grantID: String? = nil) async throws {
        guard !userID.isEmpty else { throw DeviceAuthorizationError(.invalidArgument, "user id must not be empty") }
        try await decide(userCode: userCode, status: "a", userID: userID, grantID: grantID)
        metrics.approved.increment()
    }

    /// Denies the pending grant of a user code; the device then gets `access_denied`.
    /// - Throws: as ``approve(userCode:userID:grantID:)``.
    public func deny(userCode: String, grantID: String? = nil) async throws {
        try await decide(userCode: userCode, status: "d", userID: "", grantID: grantID)
        metrics.denied.increment()
    }

    private func decide(userCode: String, status: String, userID: String, grantID: String?) async throws {
        guard let normalized = UserCode.normalize(userCode) else {
            throw DeviceAuthorizationError(.invalidUserCode, "a user code has 8 letters from BCDFGHJKLMNPQRSTVWXZ")
        }
        let (tag, id) = keys.userCodeDigest(normalized)
        let recordKey = keys.deviceKey(tag: tag, id: id)
        // The grant the person saw: its record must be the user code's, and the script checks
        // that the record is still that grant (the device-code digest), not a later one.
        var expectedDigest = ""  // "": whichever grant the user code leads to now
        if let grantID {
            guard let shown = keys.grant(grantID), shown.key == recordKey else {
                throw DeviceAuthorizationError(.grantChanged, "this code no longer leads to the request that was shown")
            }
            expectedDigest = shown.digest
        }
        var decidedID = grantID ?? keys.grantID(tag: tag, id: id, digest: "")
        var approval: [any RedisArgument] = []
        if status == "a" {
            let fields = try await client.send("HMGET", recordKey, "c", "sc", "h").array ?? []
            guard fields.count == 3, let clientID = fields[0].string, let digest = fields[2].string else {
                throw DeviceAuthorizationError(grantID == nil ? .notFound : .grantChanged, "no pending request has this code")
            }
            // The MAC is for the grant read here; the script checks the record still is that grant
            // (and, with a shown grant, that it is the one shown).
            if expectedDigest.isEmpty { expectedDigest = digest }
            decidedID = keys.grantID(tag: tag, id: id, digest: digest)
            approval = approvalArguments(grantID: decidedID, userID: userID, clientID: clientID, scopes: fields[1].string ?? "")
        }
        try await runDecision(keys: [recordKey], arguments: [expectedDigest, status, userID] + approval, grantID: decidedID)
    }

    /// The decide script, with the configured durability: the decision's own refusal first, then
    /// a shortfall of acknowledgements (``DeviceAuthorizationError/Code/notDurable``).
    func runDecision(keys scriptKeys: [String], arguments: [any RedisArgument], grantID: String) async throws {
        let (reply, acknowledgement) = try await evalDurably(StoreScripts.decide, keys: scriptKeys, arguments: arguments)
        try Self.checkDecision(reply)
        if let acknowledgement, let shortfall = shortfall(acknowledgement, operation: "decide", grantID: grantID) {
            throw DeviceAuthorizationError(.notDurable, "the decision is not confirmed by enough Redis copies yet (\(shortfall))")
        }
    }

    /// `script` with the configured durability's wait (`WAIT` / `WAITAOF`) behind it on the same
    /// connection; the acknowledgement is `nil` when no durability is configured (no wait sent).
    func evalDurably(_ script: RedisScript, keys scriptKeys: [String], arguments: [any RedisArgument] = []) async throws
        -> (reply: RedisValue, acknowledgement: Result<RedisAcknowledgement, RedisError>?)
    {
        guard let durability = configuration.durability else {
            return (try await client.eval(script, keys: scriptKeys, arguments: arguments), nil)
        }
        let (reply, acknowledgement) = try await client.eval(script, keys: scriptKeys, arguments: arguments, durability: durability)
        return (reply, acknowledgement)
    }

    /// `nil` when the acknowledgement satisfies the configured durability; else a description
    /// (safe to show and log), after counting and logging the shortfall.
    func shortfall(_ acknowledgement: Result<RedisAcknowledgement, RedisError>, operation: String, grantID: String) -> String? {
        let description: String
        switch acknowledgement {
        case .success(let ack) where ack.isSatisfied: return nil
        case .success(let ack):
            description = "\(ack.replicas) of \(ack.required.replicas) replicas" + (ack.localAppendOnlyFile == false ? ", not fsynced on the primary" : "")
        case .failure(let error):
            description = "the wait failed: \(error.code)"
        }
        metrics.durabilityShortfalls(operation).increment()
        logger.warning(
            "Write not confirmed by enough Redis copies; a failover now could lose it",
            metadata: ["grant_id": "\(grantID)", "operation": "\(operation)", "acknowledged": "\(description)"])
        return description
    }

    /// The decide script's extra arguments for an approval: MAC, client id, scopes.
    func approvalArguments(grantID: String, userID: String, clientID: String, scopes: String) -> [any RedisArgument] {
        [keys.approvalMAC(grantID: grantID, userID: userID, clientID: clientID, scopes: scopes), clientID, scopes]
    }

    private static func checkDecision(_ reply: RedisValue) throws {
        let parts = reply.array ?? []
        switch DecideReply(reply: parts) {
        case .ok: return
        case .changed: throw DeviceAuthorizationError(.grantChanged, "this code no longer leads to the request that was shown")
        case .expired: throw DeviceAuthorizationError(.expired, "this code has expired", status: .expired)
        case .decided:
            let stored = parts.count > 1 ? parts[1].string : nil
            let status: DeviceCodeStatus = stored == "d" ? .denied : .authorized
            throw DeviceAuthorizationError(
                .alreadyDecided, "this code was already \(status == .denied ? "denied" : "approved")",
                status: status, isRedeemed: stored == "r")
        case .notFound, nil: throw DeviceAuthorizationError(.notFound, "no pending request has this code")
        }
    }
}
