import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import RedisClient

/// The device's side of an open-model flow: ask for a code, poll at its interval, redeem.
extension OpenWorker {
    // MARK: - Device side

    func arrive(id: Int, intended: Int64) {
        var deviceRNG = SplitMix64(seed: settings.seed &+ UInt64(id + 1) &* 0x9E37_79B9_7F4A_7C15)
        let scenario = settings.mix.draw(rng: &deviceRNG)
        let slot = allocate()
        slots[Int(slot)].live = true
        slots[Int(slot)].id = UInt32(truncatingIfNeeded: id)
        slots[Int(slot)].scenario = scenario
        slots[Int(slot)].fastPollDone = false
        slots[Int(slot)].decided = false
        slots[Int(slot)].slowDownSeen = false
        live += 1
        peakWaiting = max(peakWaiting, live)
        counters.arrivals += 1
        timeline[bucket(intended)].arrivals += 1
        let stepIndex = step(intended)
        steps[stepIndex].peakWaiting = max(steps[stepIndex].peakWaiting, live)
        let generation = slots[Int(slot)].generation
        let request = LeanRequest(
            method: .POST, path: "/oauth/device_authorization",
            form: "client_id=" + FormEncoding.escape(settings.clients[scenario] ?? "loadtest"))
        send(.issue, intended: intended, request: request, classify: { $0.status == 200 ? "200" : Self.errorLabel($0) }) { [self] response, completed in
            guard slots[Int(slot)].generation == generation else { return }
            guard let response, response.status == 200, let deviceCode = LeanJSON.string("device_code", in: response.body),
                let userCode = LeanJSON.string("user_code", in: response.body)
            else {
                counters.issueFailures += 1
                timeline[bucket(completed)].failed += 1
                release(slot)
                return
            }
            counters.issued += 1
            let interval = LeanJSON.int("interval", in: response.body) ?? 5
            slots[Int(slot)].deviceCode = deviceCode
            slots[Int(slot)].userCode = scenario == .approve || scenario == .deny ? userCode : ""
            slots[Int(slot)].interval = UInt16(clamping: interval)
            schedule(.poll, slot: slot, at: completed + Int64(interval) * 1_000_000_000)
            if scenario == .approve || scenario == .deny {
                schedule(.person, slot: slot, at: completed + Int64(settings.delay.sample(&deviceRNG) * 1e9))
            }
        }
    }

    func poll(slot: UInt32, intended: Int64) {
        let device = slots[Int(slot)]
        let generation = device.generation
        send(.poll, intended: intended, request: tokenRequest(device), classify: Self.errorLabel) { [self] response, completed in
            guard slots[Int(slot)].generation == generation, slots[Int(slot)].live else { return }
            let device = slots[Int(slot)]
            let next = completed + Int64(device.interval) * 1_000_000_000
            guard let response else {
                counters.pollErrors += 1
                schedule(.poll, slot: slot, at: next)
                return
            }
            if response.status == 200 {
                tokenReceived(slot: slot, body: response.body, completed: completed)
                return
            }
            switch LeanJSON.string("error", in: response.body) {
            case "authorization_pending":
                if device.scenario == .misbehave && !device.fastPollDone {
                    // Poll again at once, far inside the interval: the answer must be slow_down, interval + 5.
                    slots[Int(slot)].fastPollDone = true
                    schedule(.poll, slot: slot, at: completed)
                } else {
                    if device.scenario == .misbehave && device.fastPollDone && !device.slowDownSeen {
                        // The fast poll was answered pending: the slow_down it must earn did not come.
                        counters.slowDownMissing += 1
                        slots[Int(slot)].slowDownSeen = true
                    }
                    schedule(.poll, slot: slot, at: next)
                }
            case "slow_down":
                let interval = LeanJSON.int("interval", in: response.body) ?? -1
                if interval == Int(device.interval) + 5 { counters.slowDownExact += 1 } else { counters.slowDownWrong += 1 }
                slots[Int(slot)].slowDownSeen = true
                slots[Int(slot)].interval = UInt16(clamping: max(1, interval))
                schedule(.poll, slot: slot, at: completed + Int64(max(1, interval)) * 1_000_000_000)
            case "access_denied":
                if device.scenario == .deny && device.decided { counters.deniedOK += 1 } else { counters.deniedWrong += 1 }
                timeline[bucket(completed)].denied += 1
                release(slot)
            case "expired_token":
                switch device.scenario {
                case .abandon, .misbehave:
                    counters.abandonedExpired += 1
                    if device.scenario == .misbehave && !device.slowDownSeen { counters.slowDownMissing += 1 }
                case .approve, .deny, .refresh:
                    if device.decided { counters.abandonedWrong += 1 } else { counters.expiredBeforeDecision += 1 }
                }
                timeline[bucket(completed)].expired += 1
                release(slot)
            default:
                counters.pollErrors += 1
                if response.status < 500 {
                    // An answer the RFC does not allow here (invalid_grant for a live code, …): the device gives up.
                    timeline[bucket(completed)].failed += 1
                    if device.scenario == .abandon || device.scenario == .misbehave {
                        counters.abandonedWrong += 1
                    } else if device.scenario == .deny {
                        counters.deniedWrong += 1
                    } else {
                        counters.approvedWithoutToken += 1
                    }
                    release(slot)
                } else {
                    schedule(.poll, slot: slot, at: next)
                }
            }
        }
    }

    func tokenReceived(slot: UInt32, body: ByteBuffer, completed: Int64) {
        let device = slots[Int(slot)]
        counters.tokens += 1
        if device.scenario != .approve || !device.decided { counters.tokensUnexpected += 1 }
        let subject = LeanJSON.string("access_token", in: body).flatMap(JWT.subject(of:))
        if subject != "user-\(device.id)" { counters.tokensWrongSubject += 1 }
        timeline[bucket(completed)].approved += 1
        // Exactly one token: the same code once more must be refused (invalid_grant) or, within the
        // server's retry window for lost answers, get the same token again; never a second token.
        let generation = device.generation
        let first = LeanJSON.string("access_token", in: body)
        send(.probe, intended: completed, request: tokenRequest(device), classify: Self.errorLabel) { [self] response, _ in
            guard slots[Int(slot)].generation == generation else { return }
            if let response, response.status == 200 {
                if first != nil, LeanJSON.string("access_token", in: response.body) == first { counters.probesSameToken += 1 } else { counters.secondTokens += 1 }
            } else if let response, LeanJSON.string("error", in: response.body) == "invalid_grant" {
                counters.probesInvalidGrant += 1
            } else {
                counters.probesOther += 1
            }
            release(slot)
        }
    }
}
