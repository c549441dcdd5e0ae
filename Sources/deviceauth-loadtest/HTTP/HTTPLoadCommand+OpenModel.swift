import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RedisClient

/// The open model of the HTTP load test (issue 18): arrivals at a rate, each device a record in a
/// due-time heap, and the helpers both models share.
extension HTTPLoadCommand {
    func runOpen() async throws {
        let nodeList = (nodes ?? ProcessInfo.processInfo.environment["NODE_URLS"] ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        guard !nodeList.isEmpty else { throw ValidationError("give --nodes URL[,URL…] or NODE_URLS") }
        var endpoints: [(host: String, port: Int)] = []
        for node in nodeList {
            guard let url = URL(string: node), url.scheme == "http", let host = url.host else {
                throw ValidationError("open model: not an http URL (the lean client speaks plain HTTP/1.1): \(node)")
            }
            if !allowRemote && !["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) && !host.hasPrefix("127.") {
                throw ValidationError("\(node) is not a loopback address; pass --allow-remote to load-test it")
            }
            endpoints.append((host == "localhost" ? "127.0.0.1" : host, url.port ?? 80))
        }
        guard let scenarioMix = ScenarioMix(parsing: mix), !scenarioMix.weights.contains(where: { $0.0 == .refresh && $0.1 > 0 }) else {
            throw ValidationError("--mix: approve, deny, abandon and misbehave weights (refresh is closed-model only)")
        }
        guard let delay = DecisionDelay(parsing: approvalDelay) else { throw ValidationError("--approval-delay: lognormal[:MEDIAN[:SIGMA[:MIN-MAX]]], MIN-MAX or N") }
        var objectives = OpenObjectives(findMax: findMax, maxP99Ms: maxP99Ms, maxErrorRate: maxErrorRate)
        let schedule: ArrivalSchedule
        if findMax {
            let parts = findMaxSteps.split(separator: ":").compactMap { Double($0) }
            guard parts.count == 4, parts[0] > 0, parts[1] > 0, parts[2] > 0, parts[3] >= parts[0] else {
                throw ValidationError("--find-max-steps START:STEP:SECONDS:MAX")
            }
            guard maxP99Ms != nil || maxErrorRate != nil else { throw ValidationError("--find-max needs --max-p99-ms and/or --max-error-rate") }
            if objectives.maxErrorRate == nil { objectives.maxErrorRate = 0.01 }
            schedule = .steps(FindMax.schedule(start: parts[0], step: parts[1], seconds: parts[2], maximum: parts[3]))
        } else if let steps {
            guard let parsed = ArrivalSchedule.parseSteps(steps) else { throw ValidationError("--steps \"rate:seconds,rate:seconds\"") }
            schedule = .steps(parsed)
        } else if let ramp {
            guard let (from, to) = ArrivalSchedule.parseRamp(ramp), let duration, duration > 0 else { throw ValidationError("--ramp A-B with --duration") }
            schedule = .ramp(from: from, to: to, seconds: Double(duration))
        } else {
            guard let arrivalRate, let rate = ArrivalSchedule.parseRate(arrivalRate), let duration, duration > 0 else {
                throw ValidationError("open model: give --arrival-rate N with --duration, --ramp A-B with --duration, --steps or --find-max")
            }
            schedule = .constant(rate: rate, seconds: Double(duration))
        }
        let workerCount = workers ?? ProcessInfo.processInfo.activeProcessorCount
        guard workerCount > 0, (1...250).contains(sourceAddresses), timelineSeconds > 0, drain >= 0 else {
            throw ValidationError("--workers > 0, --source-addresses 1…250, --timeline-seconds > 0, --drain ≥ 0")
        }
        let settings = OpenSettings(
            nodes: endpoints, schedule: schedule, mix: scenarioMix, delay: delay,
            clients: [.approve: openClient, .deny: openClient, .abandon: openAbandonClient, .misbehave: misbehaveClient],
            userHeader: userHeader, seed: seed ?? UInt64.random(in: 0...UInt64.max),
            connectionsPerNode: connectionsPerNode ?? 16 * workerCount,
            sourceAddresses: (1...sourceAddresses).map { "127.0.0.\($0)" },
            timeout: .seconds(Int64(requestTimeout)), drainSeconds: drain, timelineSeconds: timelineSeconds, workers: workerCount)
        let outcome = try await OpenModelRun(settings: settings, nodeURLs: nodeList, objectives: objectives).run()
        try outcome.report.publish(json: json, html: html)
        if outcome.status != 0 { throw ExitCode(outcome.status) }
    }

    /// Writes straight to stdout, so the line comes before the progress lines on stderr.
    static func say(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static let reuseCounter = "deviceauth_refresh_reuse_detected_total"

    static func parseRange(_ text: String, option: String = "--think-time-ms") throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        switch parts.count {
        case 1 where parts[0] >= 0: return parts[0]...parts[0]
        case 2 where parts[0] >= 0 && parts[0] <= parts[1]: return parts[0]...parts[1]
        default: throw ValidationError("\(option): N or MIN-MAX")
        }
    }
}
