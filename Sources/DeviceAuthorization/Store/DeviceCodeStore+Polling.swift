import Foundation
import Logging
import Metrics
import RedisClient

/// The token endpoint's side of the store: where a poll is decided (one script: code, client,
/// interval, status, redemption) and the token answer kept for a lost reply.
extension DeviceCodeStore {
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
            return .invalidGrant(.unknown)  // only with a retry window
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
    public func poll(
        deviceCode: String, clientID: String, origin: @autoclosure () -> String?,
        answer: (ApprovedGrant) async throws -> [UInt8]
    ) async throws -> TokenPollResult {
        let window = max(0, configuration.redemptionRetryWindow.milliseconds)
        switch try await pollStep(deviceCode: deviceCode, clientID: clientID, retryWindow: window) {
        case .outcome(.authorized(let userID, let scopes, let grantID)):
            // No retry window: the poll script has redeemed.
            return .answer(
                TokenAnswer(
                    body: try await answer(ApprovedGrant(userID: userID, scopes: scopes, grantID: grantID)),
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
            logger.notice(
                "Token answer sent again: a poll of a redeemed code from the redeeming poll's address, within the retry window",
                metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
            return .answer(TokenAnswer(body: body, grantID: grantID, source: .redelivered))
        case .approved(let grant, let mac, let recordKey, let digest):
            let originDigest = keys.originDigest(origin())
            let body = try await answer(grant)
            let arguments: [any RedisArgument] = [
                clientID, mac, try seal.seal(body, grantID: grant.grantID), window, originDigest,
                configuration.gracePeriod.milliseconds, digest,
            ]
            let (reply, acknowledgement) = try await evalDurably(StoreScripts.redeem, keys: [recordKey], arguments: arguments)
            let parts = reply.array ?? []
            switch RedeemReply(reply: parts) {
            case .redeemed:
                metrics.redeemed.increment()
                let confirmed = acknowledgement.map { shortfall($0, operation: "redeem", grantID: grant.grantID) == nil } ?? true
                // Not on enough copies: the answer waits, sealed in the record, for the device's next
                // poll. If the primary stays, that poll gets it; if a failover loses the redemption,
                // that poll mints again. Either way the device gets one token, never two.
                guard confirmed || configuration.unconfirmedRedemptionHold <= .zero else { return .unconfirmed(grantID: grant.grantID) }
                return .answer(TokenAnswer(body: body, grantID: grant.grantID, source: .minted))
            case .taken:
                guard parts.count > 1, let sealed = parts[1].bytes, let winner = openAnswer(sealed, grantID: grant.grantID, clientID: clientID) else {
                    return .outcome(.invalidGrant(.forged))
                }
                metrics.redelivered.increment()
                return .answer(TokenAnswer(body: winner, grantID: grant.grantID, source: .concurrentRedemption))
            case .replay:
                return .outcome(replayed(grantID: grant.grantID, clientID: clientID))
            case .gone, nil:
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
        let reply = try await client.eval(
            StoreScripts.poll, keys: [recordKey],
            arguments: [clientID, configuration.pollTolerance.milliseconds, configuration.maxInterval, retryWindow, digest])
        let parts = reply.array ?? []
        logger.trace("poll", metadata: ["grant_id": "\(grantID)", "answer": "\(parts.first?.string ?? "?")"])
        let answer = PollReply(reply: parts)
        switch answer {
        case .pending:
            return .outcome(.authorizationPending)
        case .slowDown:
            metrics.slowDowns.increment()
            return .outcome(.slowDown(newInterval: parts.count > 1 ? parts[1].int ?? 0 : 0))
        case .denied:
            return .outcome(.accessDenied)
        case .expired:
            metrics.expiredPolls.increment()
            return .outcome(.expiredToken)
        case .authorized, .approved:
            let userID = parts.count > 1 ? parts[1].string ?? "" : ""
            let scopes = parts.count > 2 ? parts[2].string ?? "" : ""
            let mac = parts.count > 3 ? parts[3].string ?? "" : ""
            // The script checked the stored client against `clientID`; the MAC covers it too.
            guard !userID.isEmpty, KeySchema.macsEqual(mac, keys.approvalMAC(grantID: grantID, userID: userID, clientID: clientID, scopes: scopes)) else {
                metrics.forged.increment()
                logger.error(
                    "Forged approval in Redis: the record says approved but its MAC is missing or wrong; no token issued. Someone wrote to Redis without the node secret",
                    metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
                return .outcome(.invalidGrant(.forged))
            }
            let grant = ApprovedGrant(userID: userID, scopes: scopes.split(separator: " ").map(String.init), grantID: grantID)
            if answer == .approved { return .approved(grant, mac: mac, recordKey: recordKey, digest: digest) }
            metrics.redeemed.increment()
            try await confirmRedemption(recordKey: recordKey, grantID: grantID)
            return .outcome(.authorized(userID: grant.userID, scopes: grant.scopes, grantID: grantID))
        case .redeemed:
            guard parts.count > 3, let sealed = parts[1].bytes, let origin = parts[2].string else { return .outcome(.invalidGrant(.unknown)) }
            return .redeemed(
                sealed: sealed, origin: origin, grantID: grantID, clientID: clientID, recordKey: recordKey,
                age: .milliseconds(parts[3].int ?? 0))
        case .replay:
            return .outcome(replayed(grantID: grantID, clientID: clientID))
        case .wrongClient:
            return .outcome(.invalidGrant(.wrongClient))
        case .unknown, nil:
            return .outcome(.invalidGrant(.unknown))
        }
    }

    private func replayed(grantID: String, clientID: String) -> PollOutcome {
        metrics.replays.increment()
        logger.warning(
            "Replayed device code: the grant was already redeemed; revoke its tokens",
            metadata: ["grant_id": "\(grantID)", "client_id": "\(clientID)"])
        return .invalidGrant(.alreadyRedeemed)
    }

    /// A sealed answer from Redis, opened; `nil` (counted and logged as forged) when it does not
    /// open under this secret for this grant.
    private func openAnswer(_ sealed: [UInt8], grantID: String, clientID: String) -> [UInt8]? {
        if let body = seal.open(sealed, grantID: grantID) { return body }
        metrics.forged.increment()
        logger.error(
            "A kept token answer in Redis does not open under the node secret; not sent. Someone wrote to Redis without the secret, or the secret changed",
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
}
