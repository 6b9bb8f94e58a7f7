import Foundation
import SMPPlan
import SMPPlanReader
import SMPRender
import XCTest

#if canImport(FoundationXML)
import FoundationXML
#endif

/// `PlanPreview`: the SVG's structure (parsed as XML), and a real render in headless Chromium.
final class PreviewTests: XCTestCase {
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static func dot(_ id: UInt32, _ xMicrometres: Int32, _ yMicrometres: Int32, region: String? = nil) -> PlanDot {
        PlanDot(id: id, xMicrometres: xMicrometres, yMicrometres: yMicrometres, depthMicrometres: 800,
                dwellMicroseconds: 100_000, region: region, index: Int(id) - 1)
    }

    /// Three regions (one unnamed), nine dots.
    static let smallPlan = Plan(planID: "test-plan", dots: [
        dot(1, -10_000, 20_000, region: "front"), dot(2, -9_000, 20_500, region: "front"),
        dot(3, -8_000, 21_000, region: "front"), dot(4, 0, 0, region: "crown"),
        dot(5, 1_000, -1_000, region: "crown"), dot(6, 2_000, -2_000, region: "crown"),
        dot(7, 3_000, -3_000, region: "crown"), dot(8, 40_000, -50_000), dot(9, 41_000, -50_000),
    ])

    func loadExample(_ name: String) throws -> Plan {
        let path = Self.repositoryRoot.appendingPathComponent("Examples/\(name).json").path
        return try PlanLoader.load(path: path).0
    }

    // MARK: - Structure

    func testTheSVGIsWellFormedWithOneCirclePerDotAtTheDotsPosition() throws {
        let svg = PlanPreview.svg(for: Self.smallPlan)
        let document = try SVGDocument(svg)
        let circles = document.elements(named: "circle")
        XCTAssertEqual(circles.count, Self.smallPlan.dots.count)
        // +y is up: the SVG's y is the plan's y negated; units are millimetres.
        let centres = Set(circles.map { "\($0["cx"] ?? "?"),\($0["cy"] ?? "?")" })
        XCTAssertEqual(centres, ["-10,-20", "-9,-20.5", "-8,-21", "0,0", "1,1", "2,2", "3,3", "40,50", "41,50"])
        XCTAssertEqual(document.root?.name, "svg")
    }

    func testTheLegendCountsTheDotsOfEachRegion() throws {
        let document = try SVGDocument(PlanPreview.svg(for: Self.smallPlan))
        let legend = document.elements(named: "text").filter { $0["class"] == "legend-region" }
        let counts = Dictionary(uniqueKeysWithValues: legend.map { ($0["data-region"] ?? "?", $0["data-dots"] ?? "?") })
        XCTAssertEqual(counts, ["front": "3", "crown": "4", "(no region)": "2"])
        XCTAssertEqual(legend.map { $0.text }, ["crown: 4 dots", "front: 3 dots", "(no region): 2 dots"],
                       "sorted by name, unnamed last")
        // Each region is drawn in its legend colour.
        let groups = document.elements(named: "g").filter { $0["class"] == "region" }
        XCTAssertEqual(groups.map { $0["data-region"] ?? "?" }, ["crown", "front", "(no region)"])
        XCTAssertEqual(Set(groups.compactMap { $0["fill"] }).count, 3)
    }

    func testTheViewBoxIsInMillimetresAndHoldsTheTravelEnvelope() throws {
        let document = try SVGDocument(PlanPreview.svg(for: Self.smallPlan))
        let svg = try XCTUnwrap(document.root)
        let box = try XCTUnwrap(svg["viewBox"]).split(separator: " ").compactMap { Double($0) }
        XCTAssertEqual(box.count, 4)
        XCTAssertEqual(svg["width"], "\(PreviewTests.text(box[2]))mm", "one user unit is one millimetre")
        XCTAssertLessThanOrEqual(box[0], -150)
        XCTAssertGreaterThanOrEqual(box[0] + box[2], 150)
        XCTAssertLessThanOrEqual(box[1], -150)
        XCTAssertGreaterThanOrEqual(box[1] + box[3], 150)
        let envelope = try XCTUnwrap(document.elements(named: "rect").first { $0["id"] == "travel-envelope" })
        XCTAssertEqual([envelope["x"], envelope["y"], envelope["width"], envelope["height"]], ["-150", "-150", "300", "300"])
        let title = try XCTUnwrap(document.elements(named: "text").first { $0["id"] == "title" })
        XCTAssertEqual(title.text, "Plan test-plan")
        let subtitle = try XCTUnwrap(document.elements(named: "text").first { $0["id"] == "subtitle" })
        XCTAssertEqual(subtitle.text, "9 dots · bounding box x -10 … 41 mm, y -50 … 21 mm (51 × 71 mm)")
        let scale = document.elements(named: "text").filter { $0.parentID == "scale-bar" }
        XCTAssertEqual(scale.map(\.text), ["50 mm"])
        XCTAssertFalse(document.elements(named: "text").filter { $0.parentID == "grid-labels" }.isEmpty)
    }

    func testAGivenEnvelopeIsOutlined() throws {
        var options = PlanPreviewOptions()
        options.envelope.travelXMicrometres = 60_000
        options.envelope.travelYMicrometres = 80_000
        let document = try SVGDocument(PlanPreview.svg(for: Self.smallPlan, options: options))
        let envelope = try XCTUnwrap(document.elements(named: "rect").first { $0["id"] == "travel-envelope" })
        XCTAssertEqual([envelope["x"], envelope["y"], envelope["width"], envelope["height"]], ["-60", "-80", "120", "160"])
    }

    func testDotsTooSmallToSeeAreEnlargedAndTheLegendSaysSo() throws {
        let document = try SVGDocument(PlanPreview.svg(for: Self.smallPlan))
        let radius = try XCTUnwrap(Double(document.elements(named: "circle").first?["r"] ?? ""))
        XCTAssertGreaterThan(radius, 0.05, "a 0.1 mm dot is invisible at full-head scale")
        let size = try XCTUnwrap(document.elements(named: "text").first { $0["id"] == "dot-size" })
        XCTAssertTrue(size.text.contains("enlarged"), size.text)

        // A few millimetres framed: true size is visible, and drawn so.
        var options = PlanPreviewOptions()
        options.framing = .plan
        let tiny = Plan(planID: "tiny", dots: [Self.dot(1, 0, 0), Self.dot(2, 1_000, 0), Self.dot(3, 0, 1_000)])
        let close = try SVGDocument(PlanPreview.svg(for: tiny, options: options))
        XCTAssertEqual(Set(close.elements(named: "circle").map { $0["r"] }), ["0.05"])
        let trueSize = try XCTUnwrap(close.elements(named: "text").first { $0["id"] == "dot-size" })
        XCTAssertEqual(trueSize.text, "drawn at true size, 0.1 mm")
    }

    func testTheDensityMapCountsDotsPerSquareCentimetre() throws {
        var options = PlanPreviewOptions()
        options.showDensity = true
        options.densityCellMicrometres = 5_000  // 0.25 cm²
        let plan = Plan(planID: "density", dots: [
            Self.dot(1, 1_000, 1_000), Self.dot(2, 2_000, 2_000), Self.dot(3, 3_000, 3_000), Self.dot(4, 4_000, 4_000),
            Self.dot(5, -1_000, -1_000),
        ])
        let document = try SVGDocument(PlanPreview.svg(for: plan, options: options))
        let cells = document.elements(named: "rect").filter { $0.parentID == "density" }
        XCTAssertEqual(cells.count, 2)
        let byPosition = Dictionary(uniqueKeysWithValues: cells.map { ("\($0["x"] ?? "?"),\($0["y"] ?? "?")", $0["data-dots-per-cm2"] ?? "?") })
        // Cell [0,5)×[0,5) mm has its top-left corner at SVG (0,-5); cell [-5,0)×[-5,0) at (-5,0).
        XCTAssertEqual(byPosition, ["0,-5": "16", "-5,0": "4"])
        let legend = document.elements(named: "text").filter { $0["class"] == "legend-density" }.map(\.text)
        XCTAssertEqual(legend, ["16", "12", "8", "4"])
        XCTAssertEqual(document.elements(named: "circle").count, 5)
        // Without --density there is no heat map.
        XCTAssertTrue(try SVGDocument(PlanPreview.svg(for: plan)).elements(named: "rect").filter { $0.parentID == "density" }.isEmpty)
    }

    func testTextFromThePlanIsEscaped() throws {
        let plan = Plan(planID: #"<crown> & "co" 'x'"#, dots: [Self.dot(1, 0, 0, region: "a<b&c"), Self.dot(2, 1_000, 0, region: "bell\u{7}")])
        let document = try SVGDocument(PlanPreview.svg(for: plan))
        XCTAssertEqual(document.elements(named: "title").first?.text, #"Plan <crown> & "co" 'x'"#)
        let regions = document.elements(named: "text").filter { $0["class"] == "legend-region" }.compactMap { $0["data-region"] }
        XCTAssertEqual(regions, ["a<b&c", "bell\u{FFFD}"])
    }

    func testTheOutputIsDeterministic() throws {
        let crown = try loadExample("crown")
        var options = PlanPreviewOptions()
        options.showDensity = true
        XCTAssertEqual(PlanPreview.svg(for: crown, options: options), PlanPreview.svg(for: crown, options: options))
    }

    func testAPlanWithoutDotsStillRenders() throws {
        let document = try SVGDocument(PlanPreview.svg(for: Plan(planID: "empty", dots: [])))
        XCTAssertEqual(document.elements(named: "circle").count, 0)
        XCTAssertEqual(document.elements(named: "text").first { $0["id"] == "subtitle" }?.text, "0 dots")
    }

    func testTheExamplesRenderEveryDot() throws {
        for (name, framing) in [("crown", PlanPreviewOptions.Framing.travel), ("hairline", .plan)] {
            let plan = try loadExample(name)
            var options = PlanPreviewOptions()
            options.framing = framing
            let document = try SVGDocument(PlanPreview.svg(for: plan, options: options))
            XCTAssertEqual(document.elements(named: "circle").count, plan.dots.count, name)
            let total = document.elements(named: "text").filter { $0["class"] == "legend-region" }
                .compactMap { Int($0["data-dots"] ?? "") }.reduce(0, +)
            XCTAssertEqual(total, plan.dots.count, name)
        }
    }

    // MARK: - Render in headless Chromium

    /// Chromium draws the preview; `scripts/png-stats.py` decodes the screenshot and counts pixels.
    /// Skipped without chromium unless SMP_REQUIRE_CHROMIUM=1 (CI), where a missing browser fails.
    func testChromiumDrawsTheRegionsEnvelopeAndHeatMap() throws {
        let chromium = try Self.requiredTool(["chromium", "chromium-browser"])
        let python = try Self.requiredTool(["python3"])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smp-preview-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }

        let crown = try loadExample("crown")
        let plain = try Self.screenshot(PlanPreview.svg(for: crown), name: "crown", in: directory, chromium: chromium)
        // crown-centre, crown-edge: each at full strength (the plan's deepest dots) and at the
        // 0.45 opacity over white of its shallowest (depth as shade).
        let regionColours = ["0072B2": "8CBFDC", "D55E00": "ECB68C"]
        let plainStats = try Self.pngStats(plain, colours: Array(regionColours.keys) + Array(regionColours.values) + ["C00000"],
                                           python: python)
        XCTAssertEqual(plainStats.width, 900)
        XCTAssertEqual(plainStats.height, 900)
        XCTAssertGreaterThan(plainStats.nonWhiteFraction, 0.01, "the screenshot is blank")
        XCTAssertLessThan(plainStats.nonWhiteFraction, 0.9, "the screenshot is not the picture")
        for (colour, pale) in regionColours {
            XCTAssertGreaterThan(plainStats.colours[colour] ?? 0, 50, "region colour #\(colour) hardly drawn at depth")
            XCTAssertGreaterThan(plainStats.colours[pale] ?? 0, 50, "region colour #\(colour) not paler where shallower")
            XCTAssertGreaterThan((plainStats.colours[colour] ?? 0) + (plainStats.colours[pale] ?? 0), 200,
                                 "region colour #\(colour) hardly drawn")
        }
        XCTAssertGreaterThan(plainStats.colours["C00000"] ?? 0, 100, "the travel envelope is not outlined")

        var options = PlanPreviewOptions()
        options.showDensity = true
        let dense = try Self.screenshot(PlanPreview.svg(for: crown, options: options), name: "crown-density", in: directory,
                                        chromium: chromium)
        let denseStats = try Self.pngStats(dense, colours: ["FDE725", "7AD151"], python: python)  // the two densest classes
        XCTAssertGreaterThan((denseStats.colours["FDE725"] ?? 0) + (denseStats.colours["7AD151"] ?? 0), 500,
                             "no heat map visible")
        XCTAssertGreaterThan(denseStats.nonWhiteFraction, plainStats.nonWhiteFraction)
    }

    /// Issue 19, item 3: in the preview a dot names itself on hover and its depth is its shade
    /// (the legend says which way); past `maximumNamedDots` the names are left out.
    func testPreviewDotsNameThemselvesAndShowTheirDepth() throws {
        let dots = [
            PlanDot(id: 7, xMicrometres: 1000, yMicrometres: 2000, depthMicrometres: 400, dwellMicroseconds: 60_000,
                    region: "crown", index: 0),
            PlanDot(id: 8, xMicrometres: 3000, yMicrometres: 2000, depthMicrometres: 900, dwellMicroseconds: 60_000,
                    region: "crown", index: 1),
        ]
        let svg = PlanPreview.svg(for: Plan(planID: "depths", dots: dots))
        XCTAssertTrue(svg.contains(#"<circle cx="1" cy="-2" r="#), svg)
        XCTAssertTrue(svg.contains(#" fill-opacity="0.45"><title>dot 7: x 1, y 2 mm, depth 0.4 mm, dwell 60 ms, crown</title></circle>"#), svg)
        XCTAssertTrue(svg.contains(#" fill-opacity="1"><title>dot 8: x 3, y 2 mm, depth 0.9 mm, dwell 60 ms, crown</title></circle>"#), svg)
        XCTAssertTrue(svg.contains(">paler = shallower: 0.4–0.9 mm deep</text>"), svg)

        let many = (0...PlanPreview.maximumNamedDots).map {
            PlanDot(id: UInt32($0 + 1), xMicrometres: Int32($0 % 200) * 600, yMicrometres: Int32($0 / 200) * 600,
                    depthMicrometres: 600, dwellMicroseconds: 60_000, index: $0)
        }
        let large = PlanPreview.svg(for: Plan(planID: "many", dots: many))
        XCTAssertFalse(large.contains("<title>dot "), "a large plan's preview names every dot")
        XCTAssertFalse(large.contains("fill-opacity=\"0."), "one depth shaded")
        XCTAssertTrue(large.contains(">all 0.6 mm deep</text>"))
    }

    /// Issue 19, item 3: the preview opened as it is (a file in a browser, no page around it) fits
    /// the window instead of opening at true size as a scrolled corner of the travel frame.
    func testThePreviewOpenedDirectlyFitsTheWindow() throws {
        let chromium = try Self.requiredTool(["chromium", "chromium-browser"])
        let python = try Self.requiredTool(["python3"])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smp-preview-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }

        let svg = directory.appendingPathComponent("hairline.svg")
        try PlanPreview.svg(for: try loadExample("hairline")).write(to: svg, atomically: true, encoding: .utf8)
        let png = directory.appendingPathComponent("hairline.png")
        let result = try Self.run(chromium, [
            "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--user-data-dir=\(directory.appendingPathComponent("profile").path)",
            "--screenshot=\(png.path)", "--window-size=800,600", svg.absoluteString,
        ], timeout: 120)
        XCTAssertEqual(result.status, 0, result.output)
        // At true size (471 × 366 mm, ~1,780 px wide) the window shows a corner: the travel
        // frame's red (drawn #C00000, antialiased lighter, so matched loosely) is cut at the
        // window's edges. Fitted, the ±150 mm frame is a whole square inside the window.
        let stats = try Self.pngStats(png, colours: ["0072B2", "D55E00", "C62828"], python: python)
        XCTAssertEqual(stats.width, 800)
        for colour in ["0072B2", "D55E00"] {
            XCTAssertGreaterThan(stats.colours[colour] ?? 0, 20, "region colour #\(colour) not in the window")
        }
        let frame = try XCTUnwrap(stats.boxes["C62828"], "no travel frame drawn")
        XCTAssertLessThan(frame[2], stats.width - 1, "the travel frame runs off the window's right edge: \(frame)")
        XCTAssertLessThan(frame[3], stats.height - 1, "the travel frame runs off the window's bottom edge: \(frame)")
        let side = (Double(frame[2] - frame[0]), Double(frame[3] - frame[1]))
        XCTAssertEqual(side.0 / side.1, 1, accuracy: 0.1, "the travel frame is not a square: \(frame)")
    }

    static func requiredTool(_ names: [String]) throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for name in names {
            for directory in path.split(separator: ":") {
                let url = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
                if FileManager.default.isExecutableFile(atPath: url.path) { return url }
            }
        }
        let message = "\(names.joined(separator: " or ")) not found on PATH (apt-get install \(names[0]))"
        if ProcessInfo.processInfo.environment["SMP_REQUIRE_CHROMIUM"] == "1" {
            throw TestFailure("SMP_REQUIRE_CHROMIUM=1 but " + message)
        }
        throw XCTSkip(message + "; set SMP_REQUIRE_CHROMIUM=1 to make this a failure")
    }

    /// Writes the SVG and an HTML page showing it scaled to the window, and screenshots the page.
    static func screenshot(_ svg: String, name: String, in directory: URL, chromium: URL) throws -> URL {
        try svg.write(to: directory.appendingPathComponent("\(name).svg"), atomically: true, encoding: .utf8)
        let page = directory.appendingPathComponent("\(name).html")
        try """
            <!doctype html><html><head><meta charset="utf-8"><style>
            html, body { margin: 0; height: 100%; background: #fff; }
            img { display: block; width: 100vw; height: 100vh; object-fit: contain; }
            </style></head><body><img src="\(name).svg" alt="preview"></body></html>
            """.write(to: page, atomically: true, encoding: .utf8)
        let png = directory.appendingPathComponent("\(name).png")
        let result = try run(chromium, [
            "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--user-data-dir=\(directory.appendingPathComponent("profile").path)",
            "--screenshot=\(png.path)", "--window-size=900,900", page.absoluteString,
        ], timeout: 120)
        XCTAssertEqual(result.status, 0, result.output)
        guard FileManager.default.fileExists(atPath: png.path) else {
            throw TestFailure("chromium wrote no screenshot: \(result.output)")
        }
        return png
    }

    /// Thrown to fail a test with a message (XCTest records the error's description).
    struct TestFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    struct PNGStats {
        var width: Int
        var height: Int
        var nonWhiteFraction: Double
        var colours: [String: Int]
        /// Per colour: [min x, min y, max x, max y] of its pixels.
        var boxes: [String: [Int]] = [:]
    }

    static func pngStats(_ png: URL, colours: [String], python: URL) throws -> PNGStats {
        let script = repositoryRoot.appendingPathComponent("scripts/png-stats.py").path
        let result = try run(python, [script, png.path] + colours.flatMap { ["--colour", $0] }, timeout: 120)
        XCTAssertEqual(result.status, 0, result.output)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], result.output)
        return PNGStats(width: object["width"] as? Int ?? 0, height: object["height"] as? Int ?? 0,
                        nonWhiteFraction: object["non_white_fraction"] as? Double ?? 0,
                        colours: object["colours"] as? [String: Int] ?? [:],
                        boxes: object["boxes"] as? [String: [Int]] ?? [:])
    }

    struct ProcessResult {
        var status: Int32
        var stdout: String
        var output: String
    }

    /// Runs a program with stdin closed and its output in files (no pipe to fill up, no reader
    /// thread); kills it after `timeout` seconds.
    static func run(_ executable: URL, _ arguments: [String], timeout: TimeInterval) throws -> ProcessResult {
        let directory = FileManager.default.temporaryDirectory
        let outURL = directory.appendingPathComponent("smp-run-\(UUID().uuidString).out")
        let errURL = directory.appendingPathComponent("smp-run-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try out.close()
        try err.close()
        let stdout = try String(contentsOf: outURL, encoding: .utf8)
        let stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        return ProcessResult(status: process.terminationStatus, stdout: stdout, output: stdout + stderr)
    }

    static func text(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// The elements of an SVG document, parsed with Foundation's XMLParser (which fails on malformed XML).
struct SVGDocument {
    struct Element {
        var name: String
        var attributes: [String: String]
        var text: String
        /// The `id` of the nearest ancestor that has one.
        var parentID: String?
        subscript(_ attribute: String) -> String? { attributes[attribute] }
    }

    private(set) var all: [Element] = []
    var root: Element? { all.first }

    init(_ svg: String) throws {
        let delegate = Collector()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = delegate
        guard parser.parse() else {
            throw NSError(domain: "SVGDocument", code: 1, userInfo: [
                NSLocalizedDescriptionKey: "not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "?") "
                    + "at line \(parser.lineNumber)",
            ])
        }
        all = delegate.finished
    }

    func elements(named name: String) -> [Element] { all.filter { $0.name == name } }

    private final class Collector: NSObject, XMLParserDelegate {
        var finished: [Element] = []
        private var stack: [(element: Element, index: Int)] = []

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
            let parentID = stack.reversed().lazy.compactMap { $0.element.attributes["id"] }.first
            let element = Element(name: elementName, attributes: attributeDict, text: "", parentID: parentID)
            finished.append(element)
            stack.append((element, finished.count - 1))
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            guard let top = stack.last else { return }
            finished[top.index].text += string
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
            stack.removeLast()
        }
    }
}
