import SessionRunner
import SMPRecords
import Foundation

extension SessionReport {
    // MARK: SVG

    static let colours: [DotStatus: String] = [
        .done: "#2e7d32", .planned: "#b0bec5", .sent: "#1565c0", .interrupted: "#ef6c00",
        .ambiguous: "#c62828", .skipped: "#6a1b9a",
    ]

    /// Dot map to scale (1 unit = 1 mm), coloured by status, with a legend.
    public func svg() -> String {
        let xs = dots.map { Double($0.xMicrometres) / 1000 }, ys = dots.map { Double($0.yMicrometres) / 1000 }
        let minX = (xs.min() ?? 0) - 5, maxX = (xs.max() ?? 0) + 5
        let minY = (ys.min() ?? 0) - 5, maxY = (ys.max() ?? 0) + 5
        let width = maxX - minX, height = maxY - minY
        let legendHeight = 8.0
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" viewBox="\(f(minX)) \(f(-maxY - legendHeight)) \(f(width)) \(f(height + legendHeight))" \
            width="\(Int(width * 8))" height="\(Int((height + legendHeight) * 8))" font-family="sans-serif">
            <title>Session \(session.id) — plan \(escape(session.planID))</title>
            <rect x="\(f(minX))" y="\(f(-maxY - legendHeight))" width="\(f(width))" height="\(f(height + legendHeight))" fill="#ffffff"/>

            """
        // y up in the plan, down in SVG.
        for status in DotStatus.allCases {
            let group = dots.filter { $0.status == status }
            guard !group.isEmpty else { continue }
            svg += "<g class=\"\(status.rawValue)\" fill=\"\(Self.colours[status]!)\">\n"
            for dot in group {
                svg += "<circle cx=\"\(f(Double(dot.xMicrometres) / 1000))\" cy=\"\(f(-Double(dot.yMicrometres) / 1000))\" r=\"0.3\"><title>dot \(dot.dotID): \(status.rawValue)</title></circle>\n"
            }
            svg += "</g>\n"
        }
        var x = minX + 1
        let y = -maxY - legendHeight + 3
        for status in DotStatus.allCases {
            let count = counts[status] ?? 0
            svg += "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"1\" fill=\"\(Self.colours[status]!)\"/>"
            svg += "<text x=\"\(f(x + 1.5))\" y=\"\(f(y + 1))\" font-size=\"2.6\">\(status.rawValue) \(count)</text>\n"
            x += width / Double(DotStatus.allCases.count)
        }
        svg += "</svg>\n"
        return svg
    }

    // MARK: HTML

    public func html() -> String {
        let c = counts
        var metrics: [String: String] = [:]
        if let last = events.last(where: { $0.kind == "link-metrics" }),
            let object = try? JSONSerialization.jsonObject(with: Data(last.detail.utf8)) as? [String: String]
        {
            metrics = object
        }
        let rows = DotStatus.allCases.map { "<tr><td><span class=\"swatch\" style=\"background:\(Self.colours[$0]!)\"></span>\($0.rawValue)</td><td id=\"count-\($0.rawValue)\">\(c[$0] ?? 0)</td></tr>" }
            .joined(separator: "\n")
        let timeline = events.map {
            "<tr><td title=\"\(escape($0.at))\">\(escape(LocalTime.display($0.at)))</td><td>\(escape($0.kind))</td><td><code>\(escape($0.detail))</code></td></tr>"
        }.joined(separator: "\n")
        let metricRows = metrics.sorted { $0.key < $1.key }
            .map { "<tr><td>\(escape($0.key))</td><td>\(escape($0.value))</td></tr>" }.joined(separator: "\n")
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>smpctl session \(session.id) — \(escape(session.planID))</title>
            <style>
            body { font-family: sans-serif; margin: 2em; color: #222; }
            table { border-collapse: collapse; margin-bottom: 1.5em; }
            td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
            .swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; border-radius: 50%; }
            .map svg { max-width: 800px; height: auto; border: 1px solid #ccc; }
            h1 { font-size: 1.4em; }
            </style></head><body>
            <h1>Session \(session.id): \(escape(session.planID)) — <span id="state">\(escape(session.state))</span></h1>
            <table>
            <tr><th>Done</th><td id="done">\(session.done) of \(session.total)</td></tr>
            <tr><th>Client</th><td>\(escape(session.clientReference ?? "—"))</td></tr>
            <tr><th>Session</th><td>\(session.sessionNumber.map { "\($0)" } ?? "—")\(session.sessionOf.map { " of \($0)" } ?? "")</td></tr>
            <tr><th>Operator</th><td>\(escape(session.operatorName))</td></tr>
            <tr><th>Applicator</th><td>\(escape(session.devicePath)), firmware \(escape(session.firmwareID ?? "—")), boot \(session.bootID.map { String($0) } ?? "—")</td></tr>
            <tr><th>Plan file</th><td>\(escape(session.planPath)) <br><code>sha256 \(session.planSHA256)</code></td></tr>
            <tr><th>Started</th><td>\(time(session.startedAt))</td></tr>
            <tr><th>Ended</th><td>\(session.endedAt.map(time) ?? "—")</td></tr>
            <tr><th>Reason</th><td>\(escape(session.reason ?? "—"))</td></tr>
            </table>
            <h2>Dots by status</h2>
            <table>\(rows)</table>
            <h2>Dot map</h2>
            <div class="map">\(svg())</div>
            <h2>Link</h2>
            <table>\(metricRows.isEmpty ? "<tr><td>no link metrics recorded</td></tr>" : metricRows)</table>
            <h2>Timeline</h2>
            <table><tr><th>time</th><th>event</th><th>detail</th></tr>
            \(timeline)
            </table>
            <p>Generated by smpctl from the treatment record. Records are never deleted.</p>
            </body></html>

            """
    }

    /// Local time for the reader, the recorded UTC beside it (what the records and JSON keep).
    private func time(_ stamp: String) -> String {
        "\(escape(LocalTime.display(stamp))) <small>(\(escape(stamp)))</small>"
    }

    private func f(_ value: Double) -> String { String(format: "%.3f", value) }

    private func escape(_ text: String) -> String { XMLText.escape(text) }
}
