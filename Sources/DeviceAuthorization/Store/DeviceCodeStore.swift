import Foundation
import Logging
import Metrics
import RedisClient

/// Runs the RFC 8628 device-code lifecycle on Redis, atomically across any number of API nodes.
///
/// Every decision is one Lua script using the Redis server's clock:
/// - ``issue(clientID:scopes:lifetime:interval:origin:)`` writes the grant's one record, at a key
///   derived from its user code (only if none is there, so two grants never share a user code);
/// - ``lookup(userCode:attempt:)`` finds a grant for the verification page, with exact brute-force
///   limits (each attempt is charged before it is answered);
/// - ``approve(userCode:userID:grantID:)`` / ``deny(userCode:grantID:)`` compare-and-set from pending only;
/// - ``poll(deviceCode:clientID:)`` is the token endpoint in **one round trip**: rate limit
///   (`slow_down`, +5 s), poll time, outcome, and single-use redemption.
///
/// The reference model's fine-grained methods (``authorize(_:userID:)``, ``deny(_:)``,
/// ``checkRateLimit(_:intervalSeconds:)``, ``updatePollTime(_:)``) exist too, each atomic; token
/// endpoints should use ``poll(deviceCode:clientID:)``, which does their work in one step.
///
/// ```swift
/// let store = DeviceCodeStore(client: redis, configuration: .init(secret: secret))
/// let issued = try await store.issue(clientID: "tv-app", scopes: ["profile"])
/// try await store.approve(userCode: issued.userCode, userID: "alice")
/// let outcome = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv-app")
/// // .authorized(userID: "alice", scopes: ["profile"], grantID: …) — once; then .invalidGrant
/// ```
public final class DeviceCodeStore: Sendable {
    /// The settings the store was created with.
    public let configuration: DeviceCodeStoreConfiguration
    let client: RedisClient
    /// Internal (not private) so tests can build the keys an attacker with Redis access would write.
    let keys: KeySchema
    private let seal: AnswerSeal
    let logger: Logger
    private let metrics = StoreMetrics()

    /// Creates a store on `client`.
    public init(client: RedisClient, configuration: DeviceCodeStoreConfiguration, logger: Logger = Logger(label: "deviceauth.store")) {
        self.client = client
        self.configuration = configuration
        self.keys = KeySchema(prefix: configuration.keyPrefix, secret: configuration.secret)
        self.seal = AnswerSeal(secret: configuration.secret)
        self.logger = logger
    }

    // MARK: - Issuing

    /// Issues a new grant: a device code (256 random bits) and a user code (RFC 8628 §6.1).
    /// - Parameters:
    ///   - clientID: the OAuth client asking.
    ///   - scopes: requested scopes (already validated by the caller).
    ///   - lifetime: overrides the configured lifetime (per-client settings).
    ///   - interval: overrides the configured polling interval in seconds.
    ///   - origin: the address the device asked from, as this node saw it, for the confirmation
    ///     page (``DeviceCode/requestOrigin``). At most its first 64 bytes are stored (cut at a
    ///     character boundary); `nil` or empty stores nothing.
    /// - Throws: ``DeviceAuthorizationError`` (``DeviceAuthorizationError/Code/invalidArgument``,
    ///   ``DeviceAuthorizationError/Code/userCodeSpaceExhausted``) or ``RedisError``.
    public func issue(clientID: String, scopes: [String], lifetime: Duration? = nil, interval: Int? = nil, origin: String? = nil) async throws -> IssuedDeviceCode {
        try await issue(clientID: clientID, scopes: scopes, lifetime: lifetime, interval: interval, origin: origin, userCodes: { UserCode.generate() })
    }

    /// At most 64 bytes of an origin, cut between Unicode scalars (never inside one).
    static func truncatedOrigin(_ origin: String?) -> String {
        guard let origin else { return "" }
        var result = String.UnicodeScalarView()
        var bytes = 0
        for scalar in origin.unicodeScalars {
            bytes += UTF8.width(scalar)
            guard bytes <= 64 else { break }
            result.append(scalar)
        }
        return String(result)
    }

    /// `issue` with a user-code source, so tests can force collisions.
    func issue(clientID: String, scopes: [String], lifetime: Duration?, interval: Int?, origin: String? = nil, userCodes: () -> String) async throws -> IssuedDeviceCode {
        guard !clientID.isEmpty, clientID.utf8.count <= 256 else {
            throw DeviceAuthorizationError(.invalidArgument, "client_id must be 1…256 bytes")
        }
        guard scopes.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
            throw DeviceAuthorizationError(.invalidArgument, "scopes must be non-empty and contain no spaces")
        }
        let lifetime = lifetime ?? configuration.lifetime
        let interval = interval ?? configuration.interval
        // The upper bounds keep millisecond arithmetic (here and in the scripts) far from overflow.
        guard lifetime > .zero, lifetime <= .seconds(366 * 86_400), (0...86_400).contains(interval) else {
            throw DeviceAuthorizationError(.invalidArgument, "lifetime must be positive and at most 366 days, interval 0…86400 seconds")
        }
        for _ in 0..<max(1, configuration.userCodeAttempts) {
            let userCode = userCodes()
            let (tag, id) = keys.userCodeDigest(userCode)
            let (deviceCode, digest) = keys.makeDeviceCode(tag: tag, id: id)
            let expires = try await client.eval(
                StoreScripts.issue,
                keys: [keys.deviceKey(tag: tag, id: id)],
                arguments: [digest, lifetime.milliseconds, configuration.gracePeriod.milliseconds, interval, clientID, scopes.joined(separator: " "),
                            OriginEncoding.encode(Self.truncatedOrigin(origin))]
            ).int ?? 0
            if expires == 0 {
                metrics.userCodeCollisions.increment()
                continue
            }
            metrics.issued.increment()
            return IssuedDeviceCode(
                deviceCode: deviceCode,
                userCode: UserCode.display(userCode),
                expiresIn: Int(lifetime.milliseconds / 1000),
                interval: interval,
                expiresAt: Date(milliseconds: expires),
                grantID: keys.grantID(tag: tag, id: id, digest: digest)
            )
        }
        throw DeviceAuthorizationError(.userCodeSpaceExhausted, "no free user code after \(configuration.userCodeAttempts) attempts")
    }

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
            let message = switch kind {
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
        var expectedDigest = ""   // "": whichever grant the user code leads to now
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
    private func runDecision(keys scriptKeys: [String], arguments: [any RedisArgument], grantID: String) async throws {
        let (reply, acknowledgement) = try await evalDurably(StoreScripts.decide, keys: scriptKeys, arguments: arguments)
        try Self.checkDecision(reply)
        if let acknowledgement, let shortfall = shortfall(acknowledgement, operation: "decide", grantID: grantID) {
            throw DeviceAuthorizationError(.notDurable, "the decision is not confirmed by enough Redis copies yet (\(shortfall))")
        }
    }

    /// `script` with the configured durability's wait (`WAIT` / `WAITAOF`) behind it on the same
    /// connection; the acknowledgement is `nil` when no durability is configured (no wait sent).
    private func evalDurably(_ script: RedisScript, keys scriptKeys: [String], arguments: [any RedisArgument] = []) async throws
        -> (reply: RedisValue, acknowledgement: Result<RedisAcknowledgement, RedisError>?) {
        guard let durability = configuration.durability else {
            return (try await client.eval(script, keys: scriptKeys, arguments: arguments), nil)
        }
        let (reply, acknowledgement) = try await client.eval(script, keys: scriptKeys, arguments: arguments, durability: durability)
        return (reply, acknowledgement)
    }

    /// `nil` when the acknowledgement satisfies the configured durability; else a description
    /// (safe to show and log), after counting and logging the shortfall.
    private func shortfall(_ acknowledgement: Result<RedisAcknowledgement, RedisError>, operation: String, grantID: String) -> String? {
        let description: String
        switch acknowledgement {
        case .success(let ack) where ack.isSatisfied: return nil
        case .success(let ack):
            description = "\(ack.replicas) of \(ack.required.replicas) replicas" + (ack.localAppendOnlyFile == false ? ", not fsynced on the primary" : "")
        case .failure(let error):
            description = "the wait failed: \(error.code)"
        }
        metrics.durabilityShortfalls(operation).increment()
        logger.warning("Write not confirmed by enough Redis copies; a failover now could lose it",
                       metadata: ["grant_id": "\(grantID)", "operation": "\(operation)", "acknowledged": "\(description)"])
        return description
    }

    /// The decide script's extra arguments for an approval: MAC, client id, scopes.
    private func approvalArguments(grantID: String, userID: String, clientID: String, scopes: String) -> [any RedisArgument] {
        [keys.approvalMAC(grantID: grantID, userID: userID, clientID: clientID, scopes: scopes), clientID, scopes]
    }

    private static func checkDecision(_ reply: RedisValue) throws {
        let parts = reply.array ?? []
        switch parts.first?.string {
        case "ok": return
        case "changed": throw DeviceAuthorizationError(.grantChanged, "this code no longer leads to the request that was shown")
        case "expired": throw DeviceAuthorizationError(.expired, "this code has expired", status: .expired)
        case "decided":
            let stored = parts.count > 1 ? parts[1].string : nil
            let status: DeviceCodeStatus = stored == "d" ? .denied : .authorized
            throw DeviceAuthorizationError(.alreadyDecided, "this code was already \(status == .denied ? "denied" : "approved")",
                                           status: status, isRedeemed: stored == "r")
        default: throw DeviceAuthorizationError(.notFound, "no pending request has this code")
        }
    }

    // MARK: - Token endpoint

    /// Answers a device's poll in one round trip (RFC 8628 §3.4–3.5), redeeming in the same step.
    ///
    /// While pending, a poll earlier than the interval (minus ``DeviceCodeStoreConfiguration/pollTolerance``)
    /// after the last *accepted* poll gets ``PollOutcome/slowDown(newInterval:)`` and the interval
    /// grows by 5 s for good. An approved grant is redeemed by the first poll, at once and exactly
    /// once; later polls get ``PollOutcome/invalidGrant(_:)`` with ``InvalidGrantReason/alreadyRedeemed``,
    /// which is counted and logged (with the grant id, never the code) so tokens can be revoked.
    ///
    /// A token endpoint should use ``poll(deviceCode:clientID:origin:answer:)`` instead: here an
    /// answer lost on its way to the device is a lost login.
    public func poll(deviceCode: String, clientID: String) async throws -> PollOutcome {
        switch try await pollStep(deviceCode: deviceCode, clientID: clientID, retryWindow: 0) {
        case .outcome(let outcome):
            return outcome
        case .approved:
            return .invalidGrant(.unknown)   // only with a retry window
        case .redeemed(_, _, let grantID, let clientID, let recordKey, _):
            // Redeemed by the token endpoint's poll, its retry window still open: a replay here.
            _ = try await client.eval(StoreScripts.countReplay, keys: [recordKey])
            return replayed(grantID: grantID, clientID: clientID)
        }
    }

    /// Answers a device's poll (RFC 8628 §3.4–3.5) so that no login is lost in flight: the token
    /// endpoint's way to poll.
    ///
    /// Pending, denied, expired and unknown codes are answered in one round trip, as
    /// ``poll(deviceCode:clientID:)``. For an approved grant the store calls `answer` to mint the
    /// token answer, then redeems the grant in a second script that keeps the answer sealed under
    /// the node secret (``AnswerSeal``; never in plaintext) for
    /// ``DeviceCodeStoreConfiguration/redemptionRetryWindow``. A later poll of the same device
    /// code and client **from the same `origin`** within that window gets the same answer again
    /// (``TokenAnswer/Source/redelivered``): a device whose answer was lost (a command timeout, a
    /// node that died mid-request) still completes its login, and no poller ever gets a second,
    /// different token. Every other poll of a redeemed code is a replay (``InvalidGrantReason/alreadyRedeemed``,
    /// counted in `deviceauth_grants_replayed_total`).
    ///
    /// If Redis fails between the two steps, the grant stays approved (the next poll mints again)
    /// or is redeemed with its answer kept (the next poll gets it): either way the device's next
    /// poll completes the login. Concurrent polls of one approved code may each mint; one
    /// redeems, the others send its answer (``TokenAnswer/Source/concurrentRedemption``) or are
    /// replays (another origin): a caller that minted and does not get ``TokenAnswer/Source/minted``
    /// back must discard what it minted (revoke its refresh family).
    /// - Parameters:
    ///   - origin: the address the poll came from (as the rate limits see it); `nil` when unknown.
    ///     Evaluated only for an approved or redeemed code, so a pending poll never works it out.
    ///   - answer: mints the token answer (the response body) for the approved grant.
    public func poll(deviceCode: String, clientID: String, origin: @autoclosure () -> String?,
                     answer: (ApprovedGrant) async throws -> [UInt8]) async throws -> TokenPollResult {
        let window = max(0, configuration.redemptionRetryWindow.milliseconds)
        switch try await pollStep(deviceCode: deviceCode, clientID: clientID, retryWindow: window) {
        case .outcome(.authorized(let userID, let scopes, let grantID)):
            // No retry window: the poll script has redeemed.
            return .answer(TokenAnswer(body: try await answer(ApprovedGrant(userID: userID, scopes: scopes, grantID: grantID)),
                                       grantID: grantID, source: .minted))
        case .outcome(let outcome):
            return .outcome(outcome)
        case .redeemed(let sealed, let redeemingOrigin, let grantID, let clientID, let recordKey, let age):
            guard KeySchema.macsEqual(keys.originDigest(origin()), redeemingOrigin) else {
                // Another address than the redeeming poll's: a replay, as after the window.
                _ = try await client.eval(StoreScripts.countReplay, keys: [recordKey])
                return .outcome(replayed(grantID: grantID, clientID: clientID))
            }
            guard let body = openAnswer(sealed, grantID: grantID, clientID: clientID) else { return .outcome(.invalidGrant(.forged)) }
            // A kept answer leaves once the redemption is on enough copies, as a fresh one does, or
            // once it has been held back long enough (a replica outage delays logins, never loses them).
            if try await !confirmRedemption(recordKey: recordKey, grantID: grantID), age < configuration.unconfirmedRedemptionHold {
                return .unconfirmed(grantID: grantID)
            }
            metrics.redelivered.increment()
            logger.notice("Token answer sent again: a poll of a redeemed code from the redeeming poll's address, within the retry window",
                          metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
            return .answer(TokenAnswer(body: body, grantID: grantID, source: .redelivered))
        case .approved(let grant, let mac, let recordKey, let digest):
            let originDigest = keys.originDigest(origin())
            let body = try await answer(grant)
            let arguments: [any RedisArgument] = [clientID, mac, try seal.seal(body, grantID: grant.grantID), window, originDigest,
                                                  configuration.gracePeriod.milliseconds, digest]
            let (reply, acknowledgement) = try await evalDurably(StoreScripts.redeem, keys: [recordKey], arguments: arguments)
            let parts = reply.array ?? []
            switch parts.first?.string {
            case "redeemed":
                metrics.redeemed.increment()
                let confirmed = acknowledgement.map { shortfall($0, operation: "redeem", grantID: grant.grantID) == nil } ?? true
                // Not on enough copies: the answer waits, sealed in the record, for the device's next
                // poll. If the primary stays, that poll gets it; if a failover loses the redemption,
                // that poll mints again. Either way the device gets one token, never two.
                guard confirmed || configuration.unconfirmedRedemptionHold <= .zero else { return .unconfirmed(grantID: grant.grantID) }
                return .answer(TokenAnswer(body: body, grantID: grant.grantID, source: .minted))
            case "taken":
                guard parts.count > 1, let sealed = parts[1].bytes, let winner = openAnswer(sealed, grantID: grant.grantID, clientID: clientID) else {
                    return .outcome(.invalidGrant(.forged))
                }
                metrics.redelivered.increment()
                return .answer(TokenAnswer(body: winner, grantID: grant.grantID, source: .concurrentRedemption))
            case "replay":
                return .outcome(replayed(grantID: grant.grantID, clientID: clientID))
            default:
                return .outcome(.invalidGrant(.unknown))
            }
        }
    }

    /// One step of a poll: the poll script's answer, decoded.
    private enum PollStep {
        case outcome(PollOutcome)
        /// Approved, not redeemed yet (retry window > 0): the approval's MAC checked.
        case approved(ApprovedGrant, mac: String, recordKey: String, digest: String)
        /// Redeemed within the retry window; `origin` is the redeeming poll's origin digest.
        case redeemed(sealed: [UInt8], origin: String, grantID: String, clientID: String, recordKey: String, age: Duration)
    }

    private func pollStep(deviceCode: String, clientID: String, retryWindow: Int) async throws -> PollStep {
        guard let (tag, id, digest) = keys.decode(deviceCode: deviceCode) else { return .outcome(.invalidGrant(.unknown)) }
        let recordKey = keys.deviceKey(tag: tag, id: id)
        let grantID = keys.grantID(tag: tag, id: id, digest: digest)
        let reply = try await client.eval(StoreScripts.poll, keys: [recordKey],
                                          arguments: [clientID, configuration.pollTolerance.milliseconds, configuration.maxInterval, retryWindow, digest])
        let parts = reply.array ?? []
        logger.trace("poll", metadata: ["grant_id": "\(grantID)", "answer": "\(parts.first?.string ?? "?")"])
        switch parts.first?.string {
        case "pending":
            return .outcome(.authorizationPending)
        case "slow_down":
            metrics.slowDowns.increment()
            return .outcome(.slowDown(newInterval: parts.count > 1 ? parts[1].int ?? 0 : 0))
        case "denied":
            return .outcome(.accessDenied)
        case "expired":
            metrics.expiredPolls.increment()
            return .outcome(.expiredToken)
        case let kind? where kind == "authorized" || kind == "approved":
            let userID = parts.count > 1 ? parts[1].string ?? "" : ""
            let scopes = parts.count > 2 ? parts[2].string ?? "" : ""
            let mac = parts.count > 3 ? parts[3].string ?? "" : ""
            // The script checked the stored client against `clientID`; the MAC covers it too.
            guard !userID.isEmpty, KeySchema.macsEqual(mac, keys.approvalMAC(grantID: grantID, userID: userID, clientID: clientID, scopes: scopes)) else {
                metrics.forged.increment()
                logger.error("Forged approval in Redis: the record says approved but its MAC is missing or wrong; no token issued. Someone wrote to Redis without the node secret",
                             metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
                return .outcome(.invalidGrant(.forged))
            }
            let grant = ApprovedGrant(userID: userID, scopes: scopes.split(separator: " ").map(String.init), grantID: grantID)
            if kind == "approved" { return .approved(grant, mac: mac, recordKey: recordKey, digest: digest) }
            metrics.redeemed.increment()
            try await confirmRedemption(recordKey: recordKey, grantID: grantID)
            return .outcome(.authorized(userID: grant.userID, scopes: grant.scopes, grantID: grantID))
        case "redeemed":
            guard parts.count > 3, let sealed = parts[1].bytes, let origin = parts[2].string else { return .outcome(.invalidGrant(.unknown)) }
            return .redeemed(sealed: sealed, origin: origin, grantID: grantID, clientID: clientID, recordKey: recordKey,
                             age: .milliseconds(parts[3].int ?? 0))
        case "replay":
            return .outcome(replayed(grantID: grantID, clientID: clientID))
        case "wrong_client":
            return .outcome(.invalidGrant(.wrongClient))
        default:
            return .outcome(.invalidGrant(.unknown))
        }
    }

    private func replayed(grantID: String, clientID: String) -> PollOutcome {
        metrics.replays.increment()
        logger.warning("Replayed device code: the grant was already redeemed; revoke its tokens",
                       metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
        return .invalidGrant(.alreadyRedeemed)
    }

    /// A sealed answer from Redis, opened; `nil` (counted and logged as forged) when it does not
    /// open under this secret for this grant.
    private func openAnswer(_ sealed: [UInt8], grantID: String, clientID: String) -> [UInt8]? {
        if let body = seal.open(sealed, grantID: grantID) { return body }
        metrics.forged.increment()
        logger.error("A kept token answer in Redis does not open under the node secret; not sent. Someone wrote to Redis without the secret, or the secret changed",
                     metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
        return nil
    }

    /// Waits until the redemption has the configured copies; whether it has them (`true`, and
    /// nothing sent, without durability). A shortfall (or a failed wait) is counted and logged;
    /// what the caller then answers is in ``DeviceCodeStoreConfiguration/durability``.
    @discardableResult
    private func confirmRedemption(recordKey: String, grantID: String) async throws -> Bool {
        guard configuration.durability != nil else { return true }
        let acknowledgement: Result<RedisAcknowledgement, RedisError>?
        do {
            acknowledgement = try await evalDurably(StoreScripts.confirmRedemption, keys: [recordKey]).acknowledgement
        } catch let error as RedisError {
            acknowledgement = .failure(error)
        }
        return acknowledgement.map { shortfall($0, operation: "redeem", grantID: grantID) == nil } ?? true
    }

    // MARK: - The reference model's methods, each atomic

    /// The grant of a device code, or `nil` when unknown (reference: find by device code).
    public func find(deviceCode: String) async throws -> DeviceCode? {
        guard let (tag, id, digest) = keys.decode(deviceCode: deviceCode) else { return nil }
        return try await read(tag: tag, id: id, digest: digest, userCode: nil)
    }

    /// Reference `authorize(userID:)`: pending → authorized, atomically.
    public func authorize(_ code: DeviceCode, userID: String) async throws {
        try await decide(grant: code, status: "a", userID: userID)
        metrics.approved.increment()
    }

    /// Reference `deny()`: pending → denied, atomically.
    public func deny(_ code: DeviceCode) async throws {
        try await decide(grant: code, status: "d", userID: "")
        metrics.denied.increment()
    }

    /// Reference `checkRateLimit(intervalSeconds:)`: `true` when the device polled earlier than
    /// `intervalSeconds` after its last accepted poll; the stored interval then grows by 5 s.
    public func checkRateLimit(_ code: DeviceCode, intervalSeconds: Int) async throws -> Bool {
        let grant = try record(of: code)
        let reply = try await client.eval(StoreScripts.checkRateLimit, keys: [grant.key],
                                          arguments: [intervalSeconds, configuration.pollTolerance.milliseconds, configuration.maxInterval, grant.digest])
        if reply.int == -1 { throw DeviceAuthorizationError(.notFound, "the grant no longer exists") }
        return reply.int == 1
    }

    /// Reference `updatePollTime()`: records an accepted poll now (Redis time).
    public func updatePollTime(_ code: DeviceCode) async throws {
        let grant = try record(of: code)
        let reply = try await client.eval(StoreScripts.updatePollTime, keys: [grant.key], arguments: [grant.digest])
        if reply.int != 1 { throw DeviceAuthorizationError(.notFound, "the grant no longer exists") }
    }

    private func record(of code: DeviceCode) throws -> (key: String, digest: String) {
        guard let grant = keys.grant(code.grantID) else {
            throw DeviceAuthorizationError(.invalidArgument, "malformed grant id")
        }
        return grant
    }

    /// The snapshot's client and scopes are what the approval MAC covers; the script refuses
    /// (`grantChanged`) if the record holds others.
    private func decide(grant code: DeviceCode, status: String, userID: String) async throws {
        let grant = try record(of: code)
        var arguments: [any RedisArgument] = [grant.digest, status, userID]
        if status == "a" {
            arguments += approvalArguments(grantID: code.grantID, userID: userID, clientID: code.clientID, scopes: code.scopes.joined(separator: " "))
        }
        try await runDecision(keys: [grant.key], arguments: arguments, grantID: code.grantID)
    }

    // MARK: - Reading records

    /// The record at (`tag`, `id`) if its device-code digest is `digest` (`""`: any).
    private func read(tag: String, id: String, digest: String, userCode: String?) async throws -> DeviceCode? {
        let fields = try await client.eval(StoreScripts.read, keys: [keys.deviceKey(tag: tag, id: id)], arguments: [digest]).array ?? []
        guard fields.count == 11 else { return nil }
        let text = fields.map { $0.string ?? "" }
        let statusCode = text[2]
        let status: DeviceCodeStatus = switch statusCode {
        case "a", "r": .authorized
        case "d": .denied
        default: .pending
        }
        return DeviceCode(
            grantID: keys.grantID(tag: tag, id: id, digest: text[0]),
            userCode: userCode.map(UserCode.display) ?? "",
            status: status,
            isRedeemed: statusCode == "r",
            expiresAt: Date(milliseconds: Int(text[5]) ?? 0),
            lastPolledAt: Int(text[6]).map { Date(milliseconds: $0) },
            userID: text[8].isEmpty ? nil : text[8],
            clientID: text[3],
            scopes: text[4].split(separator: " ").map(String.init),
            interval: Int(text[7]) ?? configuration.interval,
            createdAt: Date(milliseconds: Int(text[9]) ?? 0),
            observedAt: Date(milliseconds: Int(text[1]) ?? 0),
            requestOrigin: (fields[10].bytes).flatMap { $0.isEmpty ? nil : OriginEncoding.decode($0) }
        )
    }

    // MARK: - Operations

    /// SHA-1 of the poll script, so benchmarks can run the same script with `redis-benchmark`.
    public static var pollScriptSHA1: String { StoreScripts.poll.sha1 }

    /// The Redis key of a device code's record (for operators and benchmarks), or `nil` when the
    /// code is malformed.
    public func recordKey(forDeviceCode deviceCode: String) -> String? {
        guard let (tag, id, _) = keys.decode(deviceCode: deviceCode) else { return nil }
        return keys.deviceKey(tag: tag, id: id)
    }
}

extension Date {
    init(milliseconds: Int) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}

/// Counters of the lifecycle, through swift-metrics (exported by whatever backend the app
/// bootstraps, e.g. Prometheus).
struct StoreMetrics: Sendable {
    let issued = Counter(label: "deviceauth_grants_issued_total")
    let approved = Counter(label: "deviceauth_grants_approved_total")
    let denied = Counter(label: "deviceauth_grants_denied_total")
    let redeemed = Counter(label: "deviceauth_grants_redeemed_total")
    let replays = Counter(label: "deviceauth_grants_replayed_total")
    /// Token answers sent again within the retry window (a poll whose first answer was lost).
    let redelivered = Counter(label: "deviceauth_grants_redelivered_total")
    let forged = Counter(label: "deviceauth_grants_forged_total")
    let slowDowns = Counter(label: "deviceauth_polls_slow_down_total")
    let expiredPolls = Counter(label: "deviceauth_polls_expired_total")
    let lockouts = Counter(label: "deviceauth_user_code_lockouts_total")
    let userCodeCollisions = Counter(label: "deviceauth_user_code_collisions_total")
    /// Decisions (`decide`) and redemptions (`redeem`) that fewer copies confirmed than
    /// ``DeviceCodeStoreConfiguration/durability`` asks for.
    func durabilityShortfalls(_ operation: String) -> Counter {
        Counter(label: "deviceauth_durability_shortfalls_total", dimensions: [("operation", operation)])
    }
}
