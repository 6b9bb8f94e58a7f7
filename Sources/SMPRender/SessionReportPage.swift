import SessionRunner
import SMPRecords
import Foundation

extension SessionReport {
    // MARK: SVG

    static let colours: [DotStatus: String] = [
        .done: "#2e7d32", .planned: "#b0bec5", .sent: "#1565c0", .interrupted: "#ef6c00",
        .ambiguous: "#c62828", .skipped: "#6a1b9a",
    ]

    /// The dots a technician must look at before deciding how to resume: cut short
    /// (interrupted) or in doubt (ambiguous), by id.
    public var spotsToInspect: [DotRecord] {
        dots.filter { $0.status == .interrupted || $0.status == .ambiguous }.sorted { $0.dotID < $1.dotID }
    }

    /// What a status means to the technician.
    static func meaning(_ status: DotStatus) -> String {
        switch status {
        case .interrupted: "cut short"
        case .ambiguous: "in doubt"
        default: status.rawValue
        }
    }

    /// A dot's radius on the map, in mm: its depth as its size (0.2 mm at 0.2 mm deep, 0.5 mm at
    /// 1.5 mm, the envelope's range), so deeper dots read as bigger.
    static func radius(depthMicrometres: Int32) -> Double {
        let share = min(max((Double(depthMicrometres) - 200) / 1300, 0), 1)
        return 0.2 + 0.3 * share
    }

    /// One dot's hover text: id, place, depth, region, status.
    private func hover(_ dot: DotRecord) -> String {
        let place = "x \(mm(dot.xMicrometres)), y \(mm(dot.yMicrometres)) mm, depth \(mm(dot.depthMicrometres)) mm"
        return escape("dot \(dot.dotID) (\(place)\(dot.region.map { ", \($0)" } ?? "")): \(Self.meaning(dot.status))")
    }

    /// Dot map to scale (1 unit = 1 mm), coloured by status, size by depth, the spots to
    /// inspect ringed and labelled with their ids, a 10 mm scale bar and a legend; each dot names
    /// itself on hover. `outlines`: the plan's design (regions, no-go areas, hairline), drawn
    /// over the dots and kept inside the frame. `standalone`: a file of its own, shrunk to the
    /// window; inside the HTML report the page's stylesheet sizes it.
    public func svg(outlines: [PreviewOutline] = [], standalone: Bool = true) -> String {
        let outlinePoints = outlines.flatMap(\.points)
        let xs = dots.map { Double($0.xMicrometres) / 1000 } + outlinePoints.map(\.0)
        let ys = dots.map { Double($0.yMicrometres) / 1000 } + outlinePoints.map(\.1)
        let minX = (xs.min() ?? 0) - 5, maxX = max((xs.max() ?? 0) + 5, (xs.min() ?? 0) + 20)
        let minY = (ys.min() ?? 0) - 5, maxY = (ys.max() ?? 0) + 5
        let width = maxX - minX, height = maxY - minY
        let legendHeight = 8.0, scaleHeight = 8.0
        let top = -maxY - legendHeight, total = height + legendHeight + scaleHeight
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" viewBox="\(f(minX)) \(f(top)) \(f(width)) \(f(total))" \
            width="\(Int(width * 8))" height="\(Int(total * 8))" \(standalone ? #"style="max-width: 100vw; max-height: 100vh" "# : "")font-family="sans-serif">
            <title>Session \(session.id) — plan \(escape(session.planID))</title>
            <rect x="\(f(minX))" y="\(f(top))" width="\(f(width))" height="\(f(total))" fill="#ffffff"/>

            """
        // y up in the plan, down in SVG.
        for status in DotStatus.allCases {
            let group = dots.filter { $0.status == status }
            guard !group.isEmpty else { continue }
            svg += "<g class=\"\(status.rawValue)\" fill=\"\(Self.colours[status]!)\">\n"
            for dot in group {
                svg += "<circle cx=\"\(f(Double(dot.xMicrometres) / 1000))\" cy=\"\(f(-Double(dot.yMicrometres) / 1000))\" r=\"\(f(Self.radius(depthMicrometres: dot.depthMicrometres)))\"><title>\(hover(dot))</title></circle>\n"
            }
            svg += "</g>\n"
        }
        if !outlines.isEmpty { svg += PreviewOutline.svg(outlines, unit: 1) }
        let inspect = spotsToInspect
        if !inspect.isEmpty {
            svg += "<g class=\"inspect\" fill=\"none\" stroke=\"#c62828\" stroke-width=\"0.25\">\n"
            for dot in inspect {
                let x = Double(dot.xMicrometres) / 1000, y = -Double(dot.yMicrometres) / 1000
                svg += "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"1.4\"><title>\(hover(dot))</title></circle>"
                svg += "<text x=\"\(f(x + 1.6))\" y=\"\(f(y - 1.2))\" font-size=\"2\" fill=\"#c62828\" stroke=\"none\">\(dot.dotID)</text>\n"
            }
            svg += "</g>\n"
        }
        // Axes in mm (machine coordinates): ticks and labels along the bottom and the left.
        let step = max(width, height) > 150 ? 50.0 : 10.0
        svg += "<g class=\"axes\" font-size=\"1.8\" fill=\"#555\" stroke=\"#999\" stroke-width=\"0.15\">\n"
        for value in stride(from: (minX / step).rounded(.up) * step, through: maxX, by: step) {
            svg += "<line x1=\"\(f(value))\" y1=\"\(f(-minY - 1))\" x2=\"\(f(value))\" y2=\"\(f(-minY))\"/>"
            svg += "<text x=\"\(f(value))\" y=\"\(f(-minY + 2))\" text-anchor=\"middle\" stroke=\"none\">\(Int(value))</text>\n"
        }
        for value in stride(from: (minY / step).rounded(.up) * step, through: maxY, by: step) {
            svg += "<line x1=\"\(f(minX))\" y1=\"\(f(-value))\" x2=\"\(f(minX + 1))\" y2=\"\(f(-value))\"/>"
            svg += "<text x=\"\(f(minX + 1.3))\" y=\"\(f(-value + 0.6))\" stroke=\"none\">\(Int(value))</text>\n"
        }
        svg += "<text x=\"\(f(maxX - 1))\" y=\"\(f(-minY + 2))\" text-anchor=\"end\" stroke=\"none\">x mm</text>"
        svg += "<text x=\"\(f(minX + 6))\" y=\"\(f(-maxY + 2))\" stroke=\"none\">y mm</text></g>\n"
        // The scale bar: 10 mm under the map.
        let barY = -minY + 5.5
        svg += "<g class=\"scale\"><line x1=\"\(f(minX + 1))\" y1=\"\(f(barY))\" x2=\"\(f(minX + 11))\" y2=\"\(f(barY))\" stroke=\"#222\" stroke-width=\"0.4\"/>"
        svg += "<text x=\"\(f(minX + 12))\" y=\"\(f(barY + 0.9))\" font-size=\"2.4\">10 mm · dot size = depth</text></g>\n"
        // Entries as wide as their text (about 1.4 mm a character at this size), on a second row
        // when the first is full: equal shares overlapped on a narrow map.
        var x = minX + 1
        var y = -maxY - legendHeight + 2.5
        for status in DotStatus.allCases {
            let label = "\(status.rawValue) \(counts[status] ?? 0)"
            let entryWidth = 1.5 + Double(label.count) * 1.4 + 2
            if x > minX + 1 && x + entryWidth > maxX - 1 {
                x = minX + 1
                y += 3.5
            }
            svg += "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"0.9\" fill=\"\(Self.colours[status]!)\"/>"
            svg += "<text x=\"\(f(x + 1.5))\" y=\"\(f(y + 0.9))\" font-size=\"2.4\">\(label)</text>\n"
            x += entryWidth
        }
        svg += "</svg>\n"
        return svg
    }

    // MARK: HTML

    /// The whole report as one page; `outlines` as for `svg(outlines:)`.
    public func html(outlines: [PreviewOutline] = []) -> String {
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
            .map { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
            .map svg { width: 100%; max-width: 800px; max-height: 85vh; height: auto; border: 1px solid #ccc; }
            h1 { font-size: 1.4em; }
            @media print {
              body { margin: 0; font-size: 10pt; }
              .map svg { max-width: 100%; max-height: 24cm; }
              table, .map { break-inside: avoid; }
              h2 { break-after: avoid; }
            }
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
            <div class="map">\(svg(outlines: outlines, standalone: false))
            <div class="inspect"><h3>Spots to inspect</h3>\(inspectTable())</div></div>
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

    /// The cut-short and in-doubt dots, where to find them: before `smpctl resume ID
    /// --ambiguous skip|redo` the technician looks at each spot.
    private func inspectTable() -> String {
        let spots = spotsToInspect
        guard !spots.isEmpty else { return "<p id=\"inspect-none\">None: no dot was cut short or left in doubt.</p>" }
        let rows = spots.map { dot in
            "<tr id=\"inspect-\(dot.dotID)\"><td>\(dot.dotID)</td><td>\(mm(dot.xMicrometres))</td><td>\(mm(dot.yMicrometres))</td>"
                + "<td>\(mm(dot.depthMicrometres))</td><td>\(escape(dot.region ?? "—"))</td><td>\(Self.meaning(dot.status))</td></tr>"
        }.joined(separator: "\n")
        return """
            <p>Look at each spot (ringed on the map), then resume with <code>smpctl resume \(session.id) \
            --ambiguous skip</code> (leave them out) or <code>--ambiguous redo</code> (inject them again).</p>
            <table><tr><th>dot</th><th>x mm</th><th>y mm</th><th>depth mm</th><th>region</th><th>status</th></tr>
            \(rows)
            </table>
            """
    }

    private func mm(_ micrometres: Int32) -> String { String(format: "%g", Double(micrometres) / 1000) }

    /// Local time for the reader, the recorded UTC beside it (what the records and JSON keep).
    private func time(_ stamp: String) -> String {
        "\(escape(LocalTime.display(stamp))) <small>(\(escape(stamp)))</small>"
    }

    private func f(_ value: Double) -> String { String(format: "%.3f", value) }

    private func escape(_ text: String) -> String { XMLText.escape(text) }
}
