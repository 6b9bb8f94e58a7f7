import SMPRecords
import SMPPlan
// A plan drawn to scale as SVG, for the technician to look at before a session.
//
// Pure string building: the same plan and options always give the same bytes. One SVG user unit is
// one millimetre (`width`/`height` are given in mm, so a printout is true to scale). Machine
// coordinates are drawn with +x to the right and +y up (SVG's y axis points down, so y is negated).
// Every `<circle>` of the document is a dot of the plan; nothing else is drawn with circles.

/// How a preview is drawn.
public struct PlanPreviewOptions: Sendable, Hashable {
    /// What the picture frames.
    public enum Framing: String, Sendable, Hashable, CaseIterable {
        /// The whole travel of the applicator (the safety envelope) and every dot: full-head scale.
        case travel
        /// The dots' bounding box with a margin; the envelope is outlined where it is in view.
        case plan
    }

    /// Its ±travel rectangle is outlined.
    public var envelope: SafetyEnvelope = .builtIn
    public var framing: Framing = .travel
    /// Draw a heat map of dots per cm² under the dots.
    public var showDensity = false
    /// Side of a heat-map cell. Cells are aligned on multiples of it from the centre of travel.
    public var densityCellMicrometres: Int32 = 5_000
    /// True diameter of a healed dot. Dots are drawn at least large enough to be seen at the
    /// picture's scale (about 1/600 of the framed width); the legend says when they are enlarged.
    public var dotDiameterMicrometres: Int32 = 100
    /// Dots of earlier sessions of the course, drawn in grey under the plan's own.
    public var earlierDots: [PlanDot] = []
    /// Lines from the plan's design (regions, no-go areas, the hairline), drawn over the dots.
    public var outlines: [PreviewOutline] = []

    public init() {}
}

/// A line drawn on a preview in millimetres, machine coordinates: a design's region outline
/// (closed) or its hairline (open). The renderer knows nothing of designs.
public struct PreviewOutline: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable { case region, exclusion, hairline }
    public var name: String
    public var kind: Kind
    /// (x, y) in mm.
    public var points: [(Double, Double)]

    public init(name: String, kind: Kind, points: [(Double, Double)]) {
        self.name = name
        self.kind = kind
        self.points = points
    }

    /// The lines as one SVG group (y up in mm, so drawn at -y): regions dashed dark grey, no-go
    /// areas red, the hairline a solid dark red line; each named at its first point (the hairline
    /// at its end: a region is often called "hairline" too). `unit` scales strokes and text. The
    /// preview and the session report draw a design the same way.
    public static func svg(_ outlines: [PreviewOutline], unit: Double) -> String {
        let n = millimetres
        var out = "<g id=\"design\" fill=\"none\" stroke-width=\"\(n(0.3 * unit))\">\n"
        for outline in outlines where outline.points.count >= 2 {
            let points = outline.points.map { "\(n($0.0)),\(n(-$0.1))" }.joined(separator: " ")
            let element = outline.kind == .hairline ? "polyline" : "polygon"
            let style: String
            switch outline.kind {
            case .region: style = ##"stroke="#333333" stroke-dasharray="\##(n(unit)) \##(n(0.6 * unit))""##
            case .exclusion: style = ##"stroke="#C62828" fill="#C62828" fill-opacity="0.12""##
            case .hairline: style = ##"stroke="#8B0000""##
            }
            let title = XMLText.escape("\(outline.kind.rawValue) \(outline.name)")
            out += ##"<\##(element) class="\##(outline.kind.rawValue)" points="\##(points)" \##(style)><title>\##(title)</title></\##(element)>"##
            out += "\n"
            let (x, y) = outline.kind == .hairline ? outline.points[outline.points.count - 1] : outline.points[0]
            let label = XMLText.escape(outline.kind == .hairline ? "drawn \(outline.name)" : outline.name)
            let anchor = outline.kind == .hairline ? #" text-anchor="end""# : ""
            out += ##"<text x="\##(n(x))" y="\##(n(-y - 0.8 * unit))" fill="#333333" stroke="none" font-size="\##(n(1.8 * unit))"\##(anchor)>\##(label)</text>"##
            out += "\n"
        }
        return out + "</g>\n"
    }

    /// A length in mm with at most three decimals (whole micrometres), deterministic, no exponent.
    public static func millimetres(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        return PlanText.milli(Int64((value * 1000).rounded()))
    }

    public static func == (a: PreviewOutline, b: PreviewOutline) -> Bool {
        a.name == b.name && a.kind == b.kind && a.points.elementsEqual(b.points) { $0 == $1 }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(kind)
        for (x, y) in points { hasher.combine(x); hasher.combine(y) }
    }
}

/// Renders plans to SVG.
public enum PlanPreview {
    /// The SVG document (UTF-8 text) of `plan`.
    public static func svg(for plan: Plan, options: PlanPreviewOptions = PlanPreviewOptions()) -> String {
        var renderer = Renderer(plan: plan, options: options)
        return renderer.render()
    }

    /// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies), in the order
    /// regions are given them: regions sorted by name, dots without a region last in grey.
    /// Up to this many dots, each names itself on hover (id, place, depth, region); beyond it the
    /// names would more than double the file.
    public static let maximumNamedDots = 20_000

    /// A dot's hover text.
    static func hover(_ dot: PlanDot) -> String {
        "dot \(dot.id): x \(PlanText.milli(Int64(dot.xMicrometres))), y \(PlanText.milli(Int64(dot.yMicrometres))) mm, "
            + "depth \(PlanText.milli(Int64(dot.depthMicrometres))) mm, dwell \(dot.dwellMicroseconds / 1000) ms"
            + (dot.region.map { ", \($0)" } ?? "")
    }

    /// Depth as shade: the plan's shallowest dots at 0.45 opacity, its deepest fully opaque.
    static func shade(depthMicrometres depth: Int32, range: ClosedRange<Int32>) -> String {
        let share = Double(depth - range.lowerBound) / Double(range.upperBound - range.lowerBound)
        let hundredths = Int((45 + 55 * share).rounded())
        return hundredths >= 100 ? "1" : "0.\(hundredths)"
    }

    static let regionPalette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
    static let noRegionColour = "#7F7F7F"
    /// Earlier sessions' dots: light grey, behind the plan's colours.
    static let earlierColour = "#BFBFBF"
    static let noRegionName = "(no region)"
    /// Six steps of viridis, low to high density.
    static let densityPalette = ["#440154", "#414487", "#2A788E", "#22A884", "#7AD151", "#FDE725"]
}

/// A rectangle in millimetres, machine coordinates (+y up).
struct PreviewBox: Hashable {
    var minX: Double
    var maxX: Double
    var minY: Double
    var maxY: Double
    var width: Double { maxX - minX }
    var height: Double { maxY - minY }

    func union(_ other: PreviewBox) -> PreviewBox {
        PreviewBox(minX: min(minX, other.minX), maxX: max(maxX, other.maxX),
                   minY: min(minY, other.minY), maxY: max(maxY, other.maxY))
    }
}

/// One region of the legend, with its dots.
struct PreviewRegion {
    var name: String
    var colour: String
    var dots: [PlanDot]
}

private struct Renderer {
    let plan: Plan
    let options: PlanPreviewOptions
    var out = ""

    init(plan: Plan, options: PlanPreviewOptions) {
        self.plan = plan
        self.options = options
        out.reserveCapacity(4096 + plan.dots.count * 64)
    }

    // MARK: Geometry

    var travelBox: PreviewBox {
        let x = Double(max(0, options.envelope.travelXMicrometres)) / 1000
        let y = Double(max(0, options.envelope.travelYMicrometres)) / 1000
        return PreviewBox(minX: -x, maxX: x, minY: -y, maxY: y)
    }

    /// Nil for a plan without dots.
    var dotBox: PreviewBox? {
        guard let first = plan.dots.first else { return nil }
        var box = (minX: first.xMicrometres, maxX: first.xMicrometres, minY: first.yMicrometres, maxY: first.yMicrometres)
        for dot in plan.dots {
            box.minX = min(box.minX, dot.xMicrometres)
            box.maxX = max(box.maxX, dot.xMicrometres)
            box.minY = min(box.minY, dot.yMicrometres)
            box.maxY = max(box.maxY, dot.yMicrometres)
        }
        return PreviewBox(minX: Double(box.minX) / 1000, maxX: Double(box.maxX) / 1000,
                          minY: Double(box.minY) / 1000, maxY: Double(box.maxY) / 1000)
    }

    var frame: PreviewBox {
        let travel = travelBox
        guard let dots = dotBox else { return travel.width > 0 ? travel : PreviewBox(minX: -10, maxX: 10, minY: -10, maxY: 10) }
        switch options.framing {
        case .travel:
            return travel.union(dots)
        case .plan:
            let side = max(dots.width, dots.height)
            let margin = max(2, side * 0.05)
            return PreviewBox(minX: dots.minX - margin, maxX: dots.maxX + margin,
                              minY: dots.minY - margin, maxY: dots.maxY + margin)
        }
    }

    /// The regions in legend order.
    var regions: [PreviewRegion] {
        var byName: [String: [PlanDot]] = [:]
        var unnamed: [PlanDot] = []
        for dot in plan.dots {
            if let region = dot.region { byName[region, default: []].append(dot) } else { unnamed.append(dot) }
        }
        var result = byName.keys.sorted().enumerated().map { index, name in
            PreviewRegion(name: name, colour: PlanPreview.regionPalette[index % PlanPreview.regionPalette.count],
                          dots: byName[name]!)
        }
        if !unnamed.isEmpty {
            result.append(PreviewRegion(name: PlanPreview.noRegionName, colour: PlanPreview.noRegionColour, dots: unnamed))
        }
        return result
    }

    /// A round grid step giving at most ten intervals across `side` mm.
    static func gridStep(for side: Double) -> Double {
        for step in [1.0, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000] where side / step <= 10 {
            return step
        }
        return (side / 10).rounded(.up)
    }

    // MARK: Document

    mutating func render() -> String {
        let frame = self.frame
        let side = max(frame.width, frame.height, 1)
        let unit = side / 100  // text and margins scale with the picture
        let legendWidth = 44 * unit
        let regions = regions
        let trueDiameter = Double(max(1, options.dotDiameterMicrometres)) / 1000
        // About two pixels when the picture is shown 900 pixels wide.
        let visibleDiameter = (side / 400 * 100).rounded(.up) / 100
        let drawnDiameter = max(trueDiameter, visibleDiameter)
        let step = Self.gridStep(for: side)

        // The body first: the legend's height decides the picture's.
        // The plot is clipped to the frame (plus room for the envelope's stroke), so that with
        // `.plan` framing neither the envelope nor the heat map spill into the title or legend.
        let clip = 0.5 * unit
        line(##"<defs><clipPath id="plot-area"><rect x="\##(n(frame.minX - clip))" y="\##(n(-frame.maxY - clip))" "##
            + ##"width="\##(n(frame.width + 2 * clip))" height="\##(n(frame.height + 2 * clip))"/></clipPath></defs>"##)
        drawGrid(frame: frame, step: step, unit: unit)
        line(##"<g id="plot" clip-path="url(#plot-area)">"##)
        let density = options.showDensity ? densityCounts : [:]
        if options.showDensity { drawDensity(counts: density) }
        drawEnvelope(unit: unit)
        drawDots(regions: regions, diameter: drawnDiameter)
        drawOutlines(unit: unit)
        line("</g>")
        drawScaleBar(frame: frame, step: step, unit: unit)
        drawTitle(frame: frame, unit: unit)
        let legendBottom = drawLegend(regions: regions, x: frame.maxX + 3 * unit, y: -frame.maxY, unit: unit,
                                      trueDiameter: trueDiameter, drawnDiameter: drawnDiameter, density: density)
        line("</svg>")
        let body = out

        let top = -frame.maxY - 11 * unit
        let bottom = max(-frame.minY + 11 * unit, legendBottom + 2 * unit)
        let view = (x: frame.minX - 10 * unit, y: top,
                    width: frame.width + 10 * unit + 3 * unit + legendWidth, height: bottom - top)
        out = ""
        line(##"<?xml version="1.0" encoding="UTF-8"?>"##)
        // True size in mm (printed at 1:1 where it fits), shrunk to the browser window or the
        // printed page where it does not: a 300 mm travel frame otherwise opens as a scrolled corner.
        line(##"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\##(n(view.width))mm" "##
            + ##"style="max-width: 100vw; max-height: 100vh" height="\##(n(view.height))mm" viewBox="\##(n(view.x)) \##(n(view.y)) \##(n(view.width)) \##(n(view.height))" "##
            + ##"font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="\##(n(2 * unit))">"##)
        line("<title>\(escape(titleText))</title>")
        line("<desc>\(escape(subtitleText)). Units: millimetres, machine coordinates, +x right, +y up.</desc>")
        line(##"<rect id="background" x="\##(n(view.x))" y="\##(n(view.y))" width="\##(n(view.width))" height="\##(n(view.height))" fill="#FFFFFF"/>"##)
        return out + body
    }

    var titleText: String { "Plan \(plan.planID)" }

    var subtitleText: String {
        let count = plan.dots.count
        var text = "\(count) dot\(count == 1 ? "" : "s")"
        if let box = dotBox {
            text += " · bounding box x \(n(box.minX)) … \(n(box.maxX)) mm, y \(n(box.minY)) … \(n(box.maxY)) mm"
                + " (\(n(box.width)) × \(n(box.height)) mm)"
        }
        return text
    }

    mutating func drawGrid(frame: PreviewBox, step: Double, unit: Double) {
        let thin = n(0.12 * unit)
        line(##"<g id="grid" stroke="#D9D9D9" stroke-width="\##(thin)" fill="none">"##)
        line(##"<rect x="\##(n(frame.minX))" y="\##(n(-frame.maxY))" width="\##(n(frame.width))" height="\##(n(frame.height))" stroke="#A6A6A6"/>"##)
        for x in gridValues(from: frame.minX, to: frame.maxX, step: step) {
            let colour = x == 0 ? ##" stroke="#A6A6A6""## : ""
            line(##"<line x1="\##(n(x))" y1="\##(n(-frame.maxY))" x2="\##(n(x))" y2="\##(n(-frame.minY))"\##(colour)/>"##)
        }
        for y in gridValues(from: frame.minY, to: frame.maxY, step: step) {
            let colour = y == 0 ? ##" stroke="#A6A6A6""## : ""
            line(##"<line x1="\##(n(frame.minX))" y1="\##(n(-y))" x2="\##(n(frame.maxX))" y2="\##(n(-y))"\##(colour)/>"##)
        }
        line("</g>")
        line(##"<g id="grid-labels" fill="#595959" font-size="\##(n(1.7 * unit))">"##)
        for x in gridValues(from: frame.minX, to: frame.maxX, step: step) {
            line(##"<text x="\##(n(x))" y="\##(n(-frame.minY + 2.4 * unit))" text-anchor="middle">\##(n(x))</text>"##)
        }
        for y in gridValues(from: frame.minY, to: frame.maxY, step: step) {
            line(##"<text x="\##(n(frame.minX - 0.8 * unit))" y="\##(n(-y + 0.6 * unit))" text-anchor="end">\##(n(y))</text>"##)
        }
        line(##"<text x="\##(n(frame.maxX))" y="\##(n(-frame.minY + 4.6 * unit))" text-anchor="end">x (mm) →</text>"##)
        line(##"<text x="\##(n(frame.minX - 9 * unit))" y="\##(n(-frame.maxY - 1.2 * unit))">y (mm) ↑</text>"##)
        line("</g>")
    }

    func gridValues(from low: Double, to high: Double, step: Double) -> [Double] {
        var values: [Double] = []
        var value = (low / step).rounded(.up) * step
        while value <= high + step * 1e-9 {
            values.append(value == 0 ? 0 : value)  // no "-0"
            value += step
        }
        return values
    }

    /// Dots per heat-map cell, cells indexed by floor(position / cell side).
    var densityCounts: [Cell: Int] {
        let cell = Int64(max(1, options.densityCellMicrometres))
        var counts: [Cell: Int] = [:]
        for dot in plan.dots {
            counts[Cell(x: floorDiv(Int64(dot.xMicrometres), cell), y: floorDiv(Int64(dot.yMicrometres), cell)), default: 0] += 1
        }
        return counts
    }

    mutating func drawDensity(counts: [Cell: Int]) {
        guard let highest = counts.values.max() else { return }
        let side = Double(max(1, options.densityCellMicrometres)) / 1000
        line(##"<g id="density" stroke="none">"##)
        for key in counts.keys.sorted() {
            let count = counts[key]!
            let colour = PlanPreview.densityPalette[densityClass(count, highest: highest)]
            let x = Double(key.x) * side, top = -(Double(key.y) + 1) * side
            line(##"<rect x="\##(n(x))" y="\##(n(top))" width="\##(n(side))" height="\##(n(side))" fill="\##(colour)" "##
                + ##"data-dots-per-cm2="\##(n(perSquareCentimetre(count)))"/>"##)
        }
        line("</g>")
    }

    struct Cell: Hashable, Comparable {
        var x: Int64
        var y: Int64
        static func < (a: Cell, b: Cell) -> Bool { (a.y, a.x) < (b.y, b.x) }
    }

    func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    /// 0...5: which sixth of the highest cell count `count` falls in.
    func densityClass(_ count: Int, highest: Int) -> Int {
        min(PlanPreview.densityPalette.count - 1, count * PlanPreview.densityPalette.count / max(1, highest))
    }

    func perSquareCentimetre(_ count: Int) -> Double {
        let cellSquareCentimetres = Double(options.densityCellMicrometres) * Double(options.densityCellMicrometres) / 1e8
        return Double(count) / cellSquareCentimetres
    }

    mutating func drawEnvelope(unit: Double) {
        let box = travelBox
        line(##"<rect id="travel-envelope" x="\##(n(box.minX))" y="\##(n(-box.maxY))" width="\##(n(box.width))" "##
            + ##"height="\##(n(box.height))" fill="none" stroke="#C00000" stroke-width="\##(n(0.3 * unit))" "##
            + ##"stroke-dasharray="\##(n(1.5 * unit)) \##(n(0.8 * unit))"/>"##)
        line(##"<text x="\##(n(box.minX + unit))" y="\##(n(-box.maxY + 2.4 * unit))" fill="#C00000" font-size="\##(n(1.7 * unit))">"##
            + "travel limit \(travelText)</text>")
    }

    var travelText: String {
        "|x| ≤ \(PlanText.milli(options.envelope.travelXMicrometres)) mm, |y| ≤ \(PlanText.milli(options.envelope.travelYMicrometres)) mm"
    }

    mutating func drawDots(regions: [PreviewRegion], diameter: Double) {
        let radius = n(diameter / 2)
        let opacity = options.showDensity ? ##" fill-opacity="0.6""## : ""
        line(##"<g id="dots" stroke="none"\##(opacity)>"##)
        if !options.earlierDots.isEmpty {
            line(##"<g id="earlier-dots" fill="\##(PlanPreview.earlierColour)">"##)
            for dot in options.earlierDots {
                out += ##"<circle cx="\##(PlanText.milli(dot.xMicrometres))" cy="\##(PlanText.milli(-Int64(dot.yMicrometres)))" r="\##(radius)"/>"##
                out += "\n"
            }
            line("</g>")
        }
        let depths = depthRange
        let named = plan.dots.count <= PlanPreview.maximumNamedDots
        for region in regions {
            line(##"<g class="region" data-region="\##(escape(region.name))" fill="\##(region.colour)">"##)
            for dot in region.dots {
                out += ##"<circle cx="\##(PlanText.milli(dot.xMicrometres))" cy="\##(PlanText.milli(-Int64(dot.yMicrometres)))" r="\##(radius)""##
                if let depths, depths.lowerBound < depths.upperBound {
                    out += ##" fill-opacity="\##(PlanPreview.shade(depthMicrometres: dot.depthMicrometres, range: depths))""##
                }
                if named {
                    out += "><title>\(escape(PlanPreview.hover(dot)))</title></circle>\n"
                } else {
                    out += "/>\n"
                }
            }
            line("</g>")
        }
        line("</g>")
    }

    /// The plan's shallowest and deepest dot (µm); nil for an empty plan.
    var depthRange: ClosedRange<Int32>? {
        guard let first = plan.dots.first?.depthMicrometres else { return nil }
        var range = first...first
        for dot in plan.dots {
            range = min(range.lowerBound, dot.depthMicrometres)...max(range.upperBound, dot.depthMicrometres)
        }
        return range
    }

    /// The design's lines over the dots (`PreviewOutline.svg`).
    mutating func drawOutlines(unit: Double) {
        guard !options.outlines.isEmpty else { return }
        let group = PreviewOutline.svg(options.outlines, unit: unit)
        out += group
    }

    mutating func drawScaleBar(frame: PreviewBox, step: Double, unit: Double) {
        let x = frame.minX, y = -frame.minY + 7.5 * unit
        line(##"<g id="scale-bar" stroke="#000000" stroke-width="\##(n(0.35 * unit))">"##)
        line(##"<line x1="\##(n(x))" y1="\##(n(y))" x2="\##(n(x + step))" y2="\##(n(y))"/>"##)
        line(##"<line x1="\##(n(x))" y1="\##(n(y - 0.8 * unit))" x2="\##(n(x))" y2="\##(n(y + 0.8 * unit))"/>"##)
        line(##"<line x1="\##(n(x + step))" y1="\##(n(y - 0.8 * unit))" x2="\##(n(x + step))" y2="\##(n(y + 0.8 * unit))"/>"##)
        line(##"<text x="\##(n(x + step + unit))" y="\##(n(y + 0.7 * unit))" stroke="none" fill="#000000">\##(n(step)) mm</text>"##)
        line("</g>")
    }

    mutating func drawTitle(frame: PreviewBox, unit: Double) {
        line(##"<text id="title" x="\##(n(frame.minX))" y="\##(n(-frame.maxY - 6.5 * unit))" font-size="\##(n(3 * unit))" "##
            + ##"font-weight="bold">\##(escape(titleText))</text>"##)
        line(##"<text id="subtitle" x="\##(n(frame.minX))" y="\##(n(-frame.maxY - 3 * unit))">\##(escape(subtitleText))</text>"##)
    }

    /// Returns the y of the legend's last line.
    mutating func drawLegend(regions: [PreviewRegion], x: Double, y: Double, unit: Double,
                             trueDiameter: Double, drawnDiameter: Double, density: [Cell: Int]) -> Double {
        var y = y + 2 * unit
        let swatch = n(2 * unit)
        let textX = n(x + 3 * unit)
        line(##"<g id="legend">"##)
        line(##"<text x="\##(n(x))" y="\##(n(y))" font-weight="bold">Regions</text>"##)
        y += 3 * unit
        for region in regions {
            let count = region.dots.count
            line(##"<rect x="\##(n(x))" y="\##(n(y - 1.6 * unit))" width="\##(swatch)" height="\##(swatch)" fill="\##(region.colour)"/>"##)
            line(##"<text class="legend-region" data-region="\##(escape(region.name))" data-dots="\##(count)" "##
                + ##"x="\##(textX)" y="\##(n(y))">\##(escape(shortened(region.name))): \##(count) dot\##(count == 1 ? "" : "s")</text>"##)
            y += 2.8 * unit
        }
        if !options.earlierDots.isEmpty {
            let count = options.earlierDots.count
            line(##"<rect x="\##(n(x))" y="\##(n(y - 1.6 * unit))" width="\##(swatch)" height="\##(swatch)" fill="\##(PlanPreview.earlierColour)"/>"##)
            line(##"<text id="legend-earlier" data-dots="\##(count)" x="\##(textX)" y="\##(n(y))">earlier sessions: \##(count) dot\##(count == 1 ? "" : "s")</text>"##)
            y += 2.8 * unit
        }
        y += 1.5 * unit
        line(##"<text x="\##(n(x))" y="\##(n(y))" font-weight="bold">Dots</text>"##)
        y += 2.8 * unit
        if drawnDiameter > trueDiameter {
            line(##"<text id="dot-size" x="\##(n(x))" y="\##(n(y))">drawn \##(n(drawnDiameter)) mm wide, enlarged</text>"##)
            y += 2.6 * unit
            line(##"<text x="\##(n(x))" y="\##(n(y))">to be visible; true healed</text>"##)
            y += 2.6 * unit
            line(##"<text x="\##(n(x))" y="\##(n(y))">size ≈ \##(n(trueDiameter)) mm</text>"##)
        } else {
            line(##"<text id="dot-size" x="\##(n(x))" y="\##(n(y))">drawn at true size, \##(n(trueDiameter)) mm</text>"##)
        }
        if let depths = depthRange {
            y += 2.6 * unit
            let text = depths.lowerBound == depths.upperBound
                ? "all \(PlanText.milli(Int64(depths.lowerBound))) mm deep"
                : "paler = shallower: \(PlanText.milli(Int64(depths.lowerBound)))–\(PlanText.milli(Int64(depths.upperBound))) mm deep"
            line(##"<text id="dot-depth" x="\##(n(x))" y="\##(n(y))">\##(text)</text>"##)
        }
        y += 4 * unit
        line(##"<line x1="\##(n(x))" y1="\##(n(y - 0.7 * unit))" x2="\##(n(x + 2 * unit))" y2="\##(n(y - 0.7 * unit))" "##
            + ##"stroke="#C00000" stroke-width="\##(n(0.3 * unit))" stroke-dasharray="\##(n(0.6 * unit)) \##(n(0.3 * unit))"/>"##)
        line(##"<text x="\##(textX)" y="\##(n(y))">travel limit (envelope)</text>"##)
        y += 2.6 * unit
        line(##"<text x="\##(textX)" y="\##(n(y))">\##(travelText)</text>"##)
        if options.showDensity { y = drawDensityLegend(counts: density, x: x, y: y + 4 * unit, unit: unit) }
        y += 4 * unit
        line(##"<text x="\##(n(x))" y="\##(n(y))" fill="#595959">Machine coordinates,</text>"##)
        y += 2.6 * unit
        line(##"<text x="\##(n(x))" y="\##(n(y))" fill="#595959">+x right, +y up; 1 unit = 1 mm</text>"##)
        line("</g>")
        return y
    }

    /// Returns the y below the last line.
    mutating func drawDensityLegend(counts: [Cell: Int], x: Double, y: Double, unit: Double) -> Double {
        var y = y
        line(##"<text x="\##(n(x))" y="\##(n(y))" font-weight="bold">Density, dots/cm²</text>"##)
        y += 2.6 * unit
        line(##"<text x="\##(n(x))" y="\##(n(y))">(\##(PlanText.milli(options.densityCellMicrometres)) mm cells)</text>"##)
        y += 3 * unit
        guard let highest = counts.values.max() else { return y }
        let classes = PlanPreview.densityPalette.count
        for (index, colour) in PlanPreview.densityPalette.enumerated().reversed() {
            // Counts in class `index`: ceil(index·highest/classes) … ceil((index+1)·highest/classes) − 1.
            let low = max(1, (index * highest + classes - 1) / classes)
            let high = index == classes - 1 ? highest : ((index + 1) * highest + classes - 1) / classes - 1
            guard low <= high else { continue }
            let lowText = n(perSquareCentimetre(low)), highText = n(perSquareCentimetre(high))
            let range = low == high ? lowText : "\(lowText)–\(highText)"
            line(##"<rect x="\##(n(x))" y="\##(n(y - 1.6 * unit))" width="\##(n(2 * unit))" height="\##(n(2 * unit))" fill="\##(colour)"/>"##)
            line(##"<text class="legend-density" x="\##(n(x + 3 * unit))" y="\##(n(y))">\##(range)</text>"##)
            y += 2.6 * unit
        }
        return y
    }

    // MARK: Text

    mutating func line(_ text: String) {
        out += text
        out += "\n"
    }

    func shortened(_ name: String) -> String {
        name.count > 28 ? String(name.prefix(27)) + "…" : name
    }

    /// A length in mm with at most three decimals (whole micrometres), deterministic, no exponent.
    func n(_ value: Double) -> String { PreviewOutline.millimetres(value) }

    func escape(_ text: String) -> String { XMLText.escape(text) }
}
