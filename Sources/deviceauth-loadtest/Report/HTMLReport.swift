import Foundation

/// `--html FILE`: one self-contained page (inline CSS and SVG, no scripts) with the table,
/// the invariants, the latency distribution per endpoint and throughput over time.
enum HTMLReport {
    static func write(_ report: RunReport, to path: String) throws {
        try Data(render(report).utf8).write(to: URL(fileURLWithPath: path))
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    static func render(_ report: RunReport) -> String {
        var html = """
            <!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>deviceauth-loadtest \(escape(report.mode)) report</title>
            <style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd}
            td.n{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#2a7d2a;font-weight:bold}.fail{color:#c62828;font-weight:bold}
            svg{background:#fafafa;border:1px solid #ddd;margin:1em 0}svg text{font:11px system-ui,sans-serif}</style></head><body>
            <h1>deviceauth-loadtest: \(escape(report.mode)) mode</h1>
            <p>Target <code>\(escape(report.target))</code>, \(TableReport.fmt(report.elapsedSeconds, 1)) s. Settings: \(escape(report.settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")))</p>
            """
        if !report.scenarioCounts.isEmpty {
            html += "<p>Scenarios: \(escape(report.scenarioCounts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")))</p>"
        }
        if !report.invariants.isEmpty {
            html += "<h2>Invariants: <span class=\"\(report.passed ? "pass" : "fail")\">\(report.passed ? "all passed" : "FAILED")</span></h2><ul>"
            for invariant in report.invariants {
                html +=
                    "<li><span class=\"\(invariant.passed ? "pass" : "fail")\">\(invariant.passed ? "PASS" : "FAIL")</span> \(escape(invariant.name)): \(escape(invariant.detail))</li>"
            }
            html += "</ul>"
        }
        if let refresh = report.refresh {
            html += "<h2>Refresh tokens</h2><p>\(escape(RefreshSummary.describe(refresh)))</p>"
            let notable = refresh.log.filter { $0.events.count > 1 }.prefix(20)
            if !notable.isEmpty {
                html += "<table><tr><th>device</th><th>steps (first 20 devices with more than one; all in the JSON report)</th></tr>"
                for device in notable { html += "<tr><td class=n>\(device.index)</td><td>\(escape(device.events.joined(separator: " → ")))</td></tr>" }
                html += "</table>"
            }
        }
        html +=
            "<h2>Requests by endpoint and outcome</h2><table><tr><th>endpoint</th><th>outcome</th><th>count</th><th>rate/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>"
        for row in report.rows {
            html += "<tr><td>\(escape(row.endpoint))</td><td>\(escape(row.outcome))</td><td class=n>\(row.count)</td><td class=n>\(TableReport.fmt(row.rate, 1))</td>"
            for value in [row.p50Ms, row.p90Ms, row.p99Ms, row.p999Ms, row.maxMs] { html += "<td class=n>\(TableReport.fmt(value, 2))</td>" }
            html += "</tr>"
        }
        html += "</table><h2>Latency distribution (all outcomes per endpoint)</h2>" + latencyChart(report)
        html += "<h2>Throughput over time</h2>" + throughputChart(report)
        if let open = report.open { html += openSection(open) }
        html += "</body></html>\n"
        return html
    }

    /// The open model: lag, find-max, thresholds, and per-second latency, waiting devices, arrivals, polls and outcomes.
    static func openSection(_ open: OpenReport) -> String {
        var html = "<h2>Open model</h2><p>\(open.describe().dropFirst().map(escape).joined(separator: "<br>"))</p>"
        let seconds = open.timeline.map { Double($0.second) }
        for endpoint in OpenEndpoint.allCases.map(\.name) where open.timeline.contains(where: { $0.endpoints[endpoint] != nil }) {
            let points = open.timeline.map { $0.endpoints[endpoint] }
            html += "<h3>\(escape(endpoint)): latency over time (from intended send time)</h3>"
            html += seriesChart(
                x: seconds,
                series: [
                    ("p50", points.map { $0?.p50Ms ?? 0 }), ("p99", points.map { $0?.p99Ms ?? 0 }),
                    ("p99.9", points.map { $0?.p999Ms ?? 0 }),
                ], unit: "ms")
        }
        html += "<h3>Waiting devices</h3>" + seriesChart(x: seconds, series: [("waiting", open.timeline.map { Double($0.waiting) })], unit: "")
        html += "<h3>Arrivals, polls and requests per period</h3>"
        html += seriesChart(
            x: seconds,
            series: [
                ("arrivals", open.timeline.map { Double($0.arrivals) }), ("polls", open.timeline.map { Double($0.polls) }),
                ("requests", open.timeline.map { Double($0.requests) }), ("errors", open.timeline.map { Double($0.errors) }),
            ], unit: "")
        html += "<h3>Outcomes per period</h3>"
        html += seriesChart(
            x: seconds,
            series: [
                ("approved", open.timeline.map { Double($0.approved) }), ("denied", open.timeline.map { Double($0.denied) }),
                ("expired", open.timeline.map { Double($0.expired) }), ("failed", open.timeline.map { Double($0.failed) }),
            ], unit: "")
        return html
    }

    /// Several series over seconds, as polylines.
    static func seriesChart(x xs: [Double], series: [(String, [Double])], unit: String) -> String {
        let width = 760.0
        let height = 260.0
        let left = 60.0
        let right = 160.0
        let top = 15.0
        let bottom = 40.0
        let maxX = max(1, xs.max() ?? 1)
        let maxY = max(1e-9, series.flatMap(\.1).max() ?? 1)
        func x(_ value: Double) -> Double { left + value / maxX * (width - left - right) }
        func y(_ value: Double) -> Double { top + (1 - value / maxY) * (height - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
        svg += axes(width: width, height: height, left: left, right: right, top: top, bottom: bottom, maxY: maxY, unit: unit)
        for step in 0...4 {
            let value = maxX * Double(step) / 4
            svg += "<text x=\"\(x(value))\" y=\"\(height - bottom + 15)\" text-anchor=\"middle\">\(Int(value))s</text>"
        }
        for (index, (label, values)) in series.enumerated() {
            let color = palette[index % palette.count]
            let points = zip(xs, values).map { "\(String(format: "%.1f", x($0))),\(String(format: "%.1f", y($1)))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>"
            svg += "<rect x=\"\(width - right + 10)\" y=\"\(top + Double(index) * 18)\" width=\"12\" height=\"12\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(width - right + 26)\" y=\"\(top + Double(index) * 18 + 10)\">\(escape(label))</text>"
        }
        return svg + "<text x=\"\(left)\" y=\"\(height - 5)\">seconds since start</text></svg>"
    }

    /// Latency against percentile, the x axis stretched towards the tail (log of 1/(1−p)) as HdrHistogram plots do.
    static func latencyChart(_ report: RunReport) -> String {
        let width = 820.0
        let height = 320.0
        let left = 60.0
        let right = 240.0
        let top = 15.0
        let bottom = 40.0
        let endpoints = report.distributions.keys.sorted()
        let maxLatency = max(1, report.distributions.values.flatMap { $0.map(\.latencyMs) }.max() ?? 1)
        func x(_ percentile: Double) -> Double {
            let tail = min(4, log10(1 / max(1e-4, 1 - percentile / 100)))
            return left + tail / 4 * (width - left - right)
        }
        func y(_ latency: Double) -> Double { top + (1 - latency / maxLatency) * (height - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
        svg += axes(width: width, height: height, left: left, right: right, top: top, bottom: bottom, maxY: maxLatency, unit: "ms")
        for (label, percentile) in [("0%", 0.0), ("90%", 90), ("99%", 99), ("99.9%", 99.9), ("99.99%", 99.99)] {
            svg += "<text x=\"\(x(percentile))\" y=\"\(height - bottom + 15)\" text-anchor=\"middle\">\(label)</text>"
        }
        for (index, endpoint) in endpoints.enumerated() {
            let color = palette[index % palette.count]
            let points = (report.distributions[endpoint] ?? []).filter { $0.percentile < 100 }
                .map { "\(String(format: "%.1f", x($0.percentile))),\(String(format: "%.1f", y($0.latencyMs)))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>"
            svg += "<rect x=\"\(width - right + 10)\" y=\"\(top + Double(index) * 18)\" width=\"12\" height=\"12\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(width - right + 26)\" y=\"\(top + Double(index) * 18 + 10)\">\(escape(endpoint))</text>"
        }
        return svg + "<text x=\"\(left)\" y=\"\(height - 5)\">percentile</text></svg>"
    }

    /// Requests and completed flows per second.
    static func throughputChart(_ report: RunReport) -> String {
        let width = 760.0
        let height = 280.0
        let left = 60.0
        let right = 180.0
        let top = 15.0
        let bottom = 40.0
        let seconds = max(1, report.requestsPerSecond.count)
        let maxRate = Double(max(1, (report.requestsPerSecond + report.completedPerSecond).max() ?? 1))
        func x(_ second: Int) -> Double { left + Double(second) / Double(max(1, seconds - 1)) * (width - left - right) }
        func y(_ rate: Int) -> Double { top + (1 - Double(rate) / maxRate) * (height - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
        svg += axes(width: width, height: height, left: left, right: right, top: top, bottom: bottom, maxY: maxRate, unit: "/s")
        for second in stride(from: 0, to: seconds, by: max(1, seconds / 8)) {
            svg += "<text x=\"\(x(second))\" y=\"\(height - bottom + 15)\" text-anchor=\"middle\">\(second)s</text>"
        }
        let series = [
            ("requests/s", report.requestsPerSecond, palette[0]),
            (report.mode == "http" ? "flows done/s" : "operations/s", report.completedPerSecond, palette[2]),
        ]
        for (index, (label, values, color)) in series.enumerated() {
            let points = values.enumerated().map { "\(String(format: "%.1f", x($0.offset))),\(String(format: "%.1f", y($0.element)))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>"
            svg += "<rect x=\"\(width - right + 10)\" y=\"\(top + Double(index) * 18)\" width=\"12\" height=\"12\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(width - right + 26)\" y=\"\(top + Double(index) * 18 + 10)\">\(label)</text>"
        }
        return svg + "<text x=\"\(left)\" y=\"\(height - 5)\">seconds since start</text></svg>"
    }

    private static func axes(width: Double, height: Double, left: Double, right: Double, top: Double, bottom: Double, maxY: Double, unit: String) -> String {
        var svg = "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
        for step in 0...4 {
            let value = maxY * Double(step) / 4
            let yPosition = top + (1 - Double(step) / 4) * (height - top - bottom)
            svg += "<line x1=\"\(left)\" y1=\"\(yPosition)\" x2=\"\(width - right)\" y2=\"\(yPosition)\" stroke=\"#e4e4e4\"/>"
            svg += "<text x=\"\(left - 5)\" y=\"\(yPosition + 4)\" text-anchor=\"end\">\(String(format: value < 10 ? "%.1f" : "%.0f", value))\(unit)</text>"
        }
        return svg
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
