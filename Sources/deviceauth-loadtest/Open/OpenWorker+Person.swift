import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import RedisClient

/// The person's side of an open-model flow: open the verification page, look the code up, approve or deny.
extension OpenWorker {
    // MARK: - Person side

    /// Opens the verification page, looks the code up and approves or denies: three requests, each sent when
    /// the previous answer came (the person's intended times).
    func person(slot: UInt32, intended: Int64) {
        let device = slots[Int(slot)]
        let generation = device.generation
        let user = "user-\(device.id)"
        let approve = device.scenario == .approve
        let userCode = device.userCode
        let fail: (Int64) -> Void = { [self] completed in
            counters.decisionFailures += 1
            timeline[bucket(completed)].failed += 1
        }
        let form = LeanRequest(method: .GET, path: "/device?user_code=" + FormEncoding.escape(userCode), headers: [(settings.userHeader, user)])
        send(.form, intended: intended, request: form, classify: { $0.status == 200 ? "200 form" : "\($0.status)" }) { [self] response, completed in
            guard slots[Int(slot)].generation == generation else { return }
            guard let response, response.status == 200, let token = HTMLForm.hiddenValue("csrf_token", in: response.bodyString) else {
                fail(completed)
                return
            }
            var headers = [(settings.userHeader, user)]
            let cookies = Self.cookies(response)
            if !cookies.isEmpty { headers.append(("Cookie", cookies)) }
            let lookup = LeanRequest(
                method: .POST, path: "/device", headers: headers,
                form: FormEncoding.encode([("csrf_token", token), ("user_code", userCode), ("action", "lookup")]))
            send(
                .lookup, intended: completed, request: lookup,
                classify: { $0.status == 200 ? "200 confirm" : "\($0.status)" }
            ) { [self] response, completed in
                guard slots[Int(slot)].generation == generation else { return }
                guard let response, response.status == 200 else {
                    fail(completed)
                    return
                }
                let page = response.bodyString
                guard let csrf = HTMLForm.hiddenValue("csrf_token", in: page), let grant = HTMLForm.hiddenValue("grant_id", in: page),
                    let shown = HTMLForm.hiddenValue("user_code", in: page)
                else {
                    fail(completed)
                    return
                }
                var decisionHeaders = headers
                let more = Self.cookies(response)
                if !more.isEmpty { decisionHeaders = [(settings.userHeader, user), ("Cookie", more)] }
                let action = approve ? "approve" : "deny"
                let expected = approve ? "Device connected" : "Request denied"
                let decision = LeanRequest(
                    method: .POST, path: "/device", headers: decisionHeaders,
                    form: FormEncoding.encode([("csrf_token", csrf), ("user_code", shown), ("grant_id", grant), ("action", action)]))
                send(
                    .decide, intended: completed, request: decision,
                    classify: { $0.status == 200 ? "200 \(action)" : "\($0.status)" }
                ) { [self] response, completed in
                    guard slots[Int(slot)].generation == generation else { return }
                    guard let response, response.status == 200, response.bodyString.contains(expected) else {
                        fail(completed)
                        return
                    }
                    slots[Int(slot)].decided = true
                    slots[Int(slot)].userCode = ""
                    if approve { counters.approvedDecisions += 1 } else { counters.deniedDecisions += 1 }
                }
            }
        }
    }

    static func cookies(_ response: LeanResponse) -> String {
        response.headers["Set-Cookie"].compactMap { $0.split(separator: ";").first.map(String.init) }.joined(separator: "; ")
    }
}
