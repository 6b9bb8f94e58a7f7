// libFuzzer target: the design reader, `smp-design/1` (`make fuzz`). Any bytes: either a clear
// refusal naming the file, or a design whose every value is inside the envelope it was checked
// against (docs/design-format.md). Never a crash, never a hang.
import Foundation
import SMPDesign
import SMPPlan

@_cdecl("LLVMFuzzerTestOneInput")
public func designFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    let envelope = SafetyEnvelope.builtIn
    do {
        let design = try DesignLoader.load(data: bytes, sourceName: "design.json", envelope: envelope)
        check(design, envelope)
    } catch {
        precondition(error.description.hasPrefix("design.json"), "a refusal without the file name: \(error)")
        precondition(!error.issues.isEmpty, "a refusal without an issue")
    }
    return 0
}

func check(_ design: Design, _ envelope: SafetyEnvelope) {
    precondition(envelope.depthMicrometres.contains(design.defaultDepthMicrometres), "default depth outside the envelope")
    precondition(envelope.dwellMicroseconds.contains(design.defaultDwellMicroseconds), "default dwell outside the envelope")
    precondition((1...DesignLoader.maximumSessions).contains(design.course.sessions), "sessions out of range")
    precondition(design.course.shares.allSatisfy { $0 > 0 && $0 <= 1 }, "a session share outside (0, 1]")
    let densest = DesignLoader.maximumDensityPerSquareCentimetre(envelope)
    let travelX = Double(envelope.travelXMicrometres) / 1000, travelY = Double(envelope.travelYMicrometres) / 1000
    func inside(_ polygon: DesignPolygon) -> Bool {
        polygon.corners.allSatisfy { $0.xMillimetres.isFinite && $0.yMillimetres.isFinite
            && $0.xMillimetres.magnitude <= travelX && $0.yMillimetres.magnitude <= travelY }
    }
    for region in design.regions {
        precondition(region.densityPerSquareCentimetre.isFinite && region.densityPerSquareCentimetre > 0
                     && region.densityPerSquareCentimetre <= densest, "density of \(region.name) out of range")
        precondition(region.depthMicrometres.map(envelope.depthMicrometres.contains) ?? true, "region depth outside")
        precondition(region.dwellMicroseconds.map(envelope.dwellMicroseconds.contains) ?? true, "region dwell outside")
        precondition(inside(region.polygon), "region \(region.name) outside the travel")
    }
    if let hairline = design.hairline {
        precondition(hairline.featherMillimetres.isFinite && hairline.featherMillimetres >= 0
                     && hairline.featherMillimetres <= DesignLoader.maximumFeatherMillimetres, "feather out of range")
    }
}
