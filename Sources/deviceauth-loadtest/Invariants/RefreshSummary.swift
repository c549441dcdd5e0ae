import Foundation

/// Refresh-token figures of a run (`--json` key `refresh`): totals, and every refresh device's steps.
struct RefreshSummary: Sendable, Codable {
    struct Device: Sendable, Codable {
        var index: Int
        var events: [String]
    }

    /// Devices of scenario `refresh` that got their token.
    var devices = 0
    var refreshTokensIssued = 0
    /// Every refresh that gave a new pair (one at a time, race winners, and any that should not have).
    var rotations = 0
    var racingPairs = 0
    var racingPairsOneWinner = 0
    /// Must be 0: two live refresh tokens in one family.
    var racingPairsTwoWinners = 0
    var racingPairsNoWinner = 0
    /// Racing pairs after which the newest token was refused (reuse detection revoked the family).
    var familiesDeadAfterRace = 0
    /// `POST /oauth/revoke` answered 200.
    var revocations = 0
    var refusedAfterRevocation = 0
    /// Rotated tokens presented again one at a time, refused, and families dead after them.
    var replays = 0
    var replaysRefused = 0
    var familiesDeadAfterReplay = 0
    /// Refused refreshes by RFC 6749 error code.
    var refusals: [String: Int] = [:]
    /// Refreshes or revocations whose answer never came (fault runs).
    var withoutAnswer = 0
    /// Rotated tokens the harness presented again on purpose (the losers of racing pairs with a winner, refused replays).
    var expectedReuseDetections = 0
    /// The growth of `deviceauth_refresh_reuse_detected_total` on all nodes (`nil`: not read).
    var reuseDetections: Int?
    var log: [Device] = []

    init(_ results: [DeviceResult], reuseDetections: Double?) {
        let devices = results.filter { $0.refresh != nil }
        self.devices = devices.count
        for device in devices {
            guard let record = device.refresh else { continue }
            if record.issued { refreshTokensIssued += 1 }
            rotations += record.rotations
            for pair in record.races {
                racingPairs += 1
                rotations += pair.winners
                switch pair.winners {
                case 0: racingPairsNoWinner += 1
                case 1: racingPairsOneWinner += 1
                default: racingPairsTwoWinners += 1
                }
                if pair.after == "invalid_grant" { familiesDeadAfterRace += 1 }
                if pair.after == RefreshRecord.rotated { rotations += 1 }
            }
            if record.revocationStatus == 200 { revocations += 1 }
            if record.afterRevocation == "invalid_grant" { refusedAfterRevocation += 1 }
            if record.afterRevocation == RefreshRecord.rotated { rotations += 1 }
            if record.replay != nil { replays += 1 }
            if record.replay == "invalid_grant" { replaysRefused += 1 }
            if record.replay == RefreshRecord.rotated { rotations += 1 }
            if record.afterReplay == "invalid_grant" { familiesDeadAfterReplay += 1 }
            if record.afterReplay == RefreshRecord.rotated { rotations += 1 }
            for (error, count) in record.refusals { refusals[error, default: 0] += count }
            withoutAnswer += record.withoutAnswer
            log.append(Device(index: device.index, events: record.events))
        }
        expectedReuseDetections = Self.expectedReuses(devices)
        self.reuseDetections = reuseDetections.map { Int($0) }
    }

    /// One line for the terminal and the HTML report.
    static func describe(_ summary: RefreshSummary) -> String {
        let refusals = summary.refusals.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        return "\(summary.devices) devices, \(summary.refreshTokensIssued) refresh tokens issued, \(summary.rotations) rotations; "
            + "\(summary.racingPairs) racing pairs (\(summary.racingPairsOneWinner) with one winner, \(summary.racingPairsTwoWinners) with two, "
            + "\(summary.racingPairsNoWinner) with none), family dead after \(summary.familiesDeadAfterRace); "
            + "\(summary.revocations) revocations, refresh refused after \(summary.refusedAfterRevocation); "
            + "\(summary.replays) replays of a rotated token (\(summary.replaysRefused) refused, family dead after \(summary.familiesDeadAfterReplay)); "
            + "refusals: \(refusals.isEmpty ? "none" : refusals); reuse detections counted \(summary.reuseDetections.map(String.init) ?? "-"), "
            + "expected \(summary.expectedReuseDetections)" + (summary.withoutAnswer > 0 ? "; \(summary.withoutAnswer) without answer" : "")
    }

    /// Reuses the harness caused on purpose: each loser of a racing pair with one winner, and each replay, refused with
    /// `invalid_grant`, presented a rotated token of a live family (the refresh after it finds the family gone: no reuse).
    static func expectedReuses(_ devices: [DeviceResult]) -> Int {
        devices.reduce(0) { total, device in
            guard let record = device.refresh else { return total }
            let losers = record.races.filter { $0.winners == 1 && $0.answers.contains("invalid_grant") }.count
            return total + losers + (record.replay == "invalid_grant" ? 1 : 0)
        }
    }
}
