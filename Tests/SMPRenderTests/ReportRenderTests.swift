import Foundation
import XCTest

@testable import SessionRunner
@testable import SMPPlan
@testable import SMPRecords
@testable import SMPRender

/// The session report as a person sees it: headless Chromium loads the HTML; its DOM must show
/// the counts and its screenshot must show the dot map in the status colours.
final class ReportRenderTests: XCTestCase {
    func recordedReport(in directory: URL) throws -> SessionReport {
        let store = try RecordStore(path: directory.appendingPathComponent("records.sqlite").path)
        let dots = (0..<400).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 20) * 1500, yMicrometres: Int32($0 / 20) * 1500,
                    depthMicrometres: 800, dwellMicroseconds: 50_000, index: $0)
        }
        let info = SessionInfo(planID: "render-<check>", planPath: "/tmp/p.json", planSHA256: "00", operatorName: "tester",
                               machineID: "m", firmwareID: "smp-sim 1.0", bootID: 1, devicePath: "/dev/pts/9")
        let id = try store.createSession(info, dots: dots)
        var batch = RecordBatch()
        batch.claims = (1...300).map(UInt32.init)
        try store.apply(batch, session: id)
        var done = RecordBatch()
        done.done = (1...290).map { RecordBatch.Done(dotID: UInt32($0), deviceDoneCount: UInt32($0)) }
        done.statusChanges = [(.interrupted, [291]), (.planned, (292...300).map(UInt32.init))]
        done.events = [RecordBatch.Event(kind: "link-metrics", detail: ["retransmissions": "3", "srtt_us": "900"])]
        done.end = RecordBatch.End(state: "stopped", reason: "e-stop")
        try store.apply(done, session: id)
        return try SessionReport(store: store, sessionID: id)
    }

    /// Issue 19, item 3: the spots to inspect (cut short, in doubt) listed beside the map with
    /// where they are, ringed and labelled on it; every dot names itself on hover; a scale bar.
    func testTheReportListsTheSpotsToInspectAndRingsThemOnTheMap() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let report = try recordedReport(in: directory)
        XCTAssertEqual(report.spotsToInspect.map(\.dotID), [291])
        let html = report.html()
        XCTAssertTrue(html.contains("<tr id=\"inspect-291\"><td>291</td><td>15</td><td>21</td><td>0.8</td><td>—</td><td>cut short</td></tr>"), html)
        XCTAssertTrue(html.contains("smpctl resume \(report.session.id) --ambiguous skip"), html)
        let svg = report.svg()
        XCTAssertTrue(svg.contains("<title>dot 291 (x 15, y 21 mm, depth 0.8 mm): cut short</title>"), svg)
        XCTAssertTrue(svg.contains("<g class=\"inspect\""), "the spot is not ringed")
        XCTAssertTrue(svg.contains(">291</text>"), "the spot's id is not on the map")
        XCTAssertTrue(svg.contains("<title>dot 1 (x 0, y 0 mm, depth 0.8 mm): done</title>"), "no hover text on a dot")
        XCTAssertTrue(svg.contains("10 mm"), "no scale bar")
        XCTAssertTrue(svg.contains("<g class=\"axes\"") && svg.contains(">x mm</text>") && svg.contains(">20</text>"),
                      "no axes in mm")
        XCTAssertTrue(html.contains("@media print"), "no print stylesheet")
        XCTAssertLessThan(SessionReport.radius(depthMicrometres: 300), SessionReport.radius(depthMicrometres: 1200),
                          "depth is not shown by size")
    }

    func testChromiumRendersTheReportWithItsCountsAndDotMap() throws {
        let chromium = try PreviewTests.requiredTool(["chromium", "chromium-browser"])
        let python = try PreviewTests.requiredTool(["python3"])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smpctl-report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let report = try recordedReport(in: directory)
        let page = directory.appendingPathComponent("report.html")
        try report.html().write(to: page, atomically: true, encoding: .utf8)

        let dom = try PreviewTests.run(chromium, [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--user-data-dir=\(directory.appendingPathComponent("profile-dom").path)", "--dump-dom", page.absoluteString,
        ], timeout: 120)
        XCTAssertEqual(dom.status, 0, dom.output)
        XCTAssertTrue(dom.stdout.contains("<td id=\"done\">290 of 400</td>"), String(dom.stdout.prefix(2000)))
        XCTAssertTrue(dom.stdout.contains("<td id=\"count-interrupted\">1</td>"))
        XCTAssertTrue(dom.stdout.contains("<td id=\"count-planned\">109</td>"))
        XCTAssertTrue(dom.stdout.contains("render-&lt;check&gt;"), "plan id must be escaped")
        XCTAssertTrue(dom.stdout.contains("<tr id=\"inspect-291\">"), "the spot to inspect is not listed")

        let png = directory.appendingPathComponent("report.png")
        let shot = try PreviewTests.run(chromium, [
            "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--user-data-dir=\(directory.appendingPathComponent("profile-shot").path)",
            "--screenshot=\(png.path)", "--window-size=1000,1400", page.absoluteString,
        ], timeout: 120)
        XCTAssertEqual(shot.status, 0, shot.output)
        let stats = try PreviewTests.pngStats(png, colours: ["2E7D32", "B0BEC5"], python: python)
        XCTAssertEqual(stats.width, 1000)
        XCTAssertGreaterThan(stats.nonWhiteFraction, 0.02, "the page is blank")
        XCTAssertGreaterThan(stats.colours["2E7D32"] ?? 0, 500, "no done-green dots on the map")
        XCTAssertGreaterThan(stats.colours["B0BEC5"] ?? 0, 100, "no planned-grey dots on the map")
    }
}
