import SMPPlan

/// A designed session as `smp-plan/1` text: keys in the format's order, millimetres with the
/// micrometre's three decimals, one dot per line, so the same plan is the same bytes and a diff
/// between two plans reads dot by dot.
public enum PlanFileText {
    /// The plan of `session` as the UTF-8 text of an `smp-plan/1` file: the design's defaults as
    /// the plan's, each dot's depth or dwell written only where its region gives its own.
    public static func text(_ session: DesignedSession) -> String {
        let plan = session.plan
        var text = "{\n"
        text += "  \"format\": \"smp-plan/1\",\n"
        text += "  \"plan_id\": \(string(plan.planID)),\n"
        if let client = plan.client {
            text += "  \"client\": {\"reference\": \(string(client.reference))"
            if let date = client.hairTransplantDate { text += ", \"hair_transplant_date\": \"\(date)\"" }
            text += "},\n"
        }
        if let number = plan.session {
            text += "  \"session\": {\"number\": \(number.number)"
            if let of = number.of { text += ", \"of\": \(of)" }
            if let date = number.date { text += ", \"date\": \"\(date)\"" }
            text += "},\n"
        }
        if let design = plan.design {
            text += "  \"design\": {\"design_id\": \(string(design.designID)), \"after\": ["
            text += design.after.map(source).joined(separator: ", ")
            text += "]},\n"
        }
        text += "  \"defaults\": {\"depth_mm\": \(PlanText.milli(session.defaultDepthMicrometres)), "
        text += "\"dwell_ms\": \(PlanText.milli(session.defaultDwellMicroseconds))},\n"
        text += "  \"dots\": [\n"
        for (index, dot) in plan.dots.enumerated() {
            text += "    {\"id\": \(dot.id), \"x_mm\": \(PlanText.milli(dot.xMicrometres)), "
            text += "\"y_mm\": \(PlanText.milli(dot.yMicrometres))"
            // Only what differs from the defaults: a region's own depth or dwell.
            if dot.depthMicrometres != session.defaultDepthMicrometres {
                text += ", \"depth_mm\": \(PlanText.milli(dot.depthMicrometres))"
            }
            if dot.dwellMicroseconds != session.defaultDwellMicroseconds {
                text += ", \"dwell_ms\": \(PlanText.milli(dot.dwellMicroseconds))"
            }
            if let region = dot.region { text += ", \"region\": \(string(region))" }
            text += index == plan.dots.count - 1 ? "}\n" : "},\n"
        }
        text += "  ]\n}\n"
        return text
    }

    private static func source(_ source: PlanDesignSource) -> String {
        var fields = ["\"plan_id\": \(string(source.planID))"]
        if let digest = source.planSHA256 { fields.append("\"plan_sha256\": \"\(digest)\"") }
        if let session = source.recordSession { fields.append("\"record_session\": \(session)") }
        if let dots = source.dotCount { fields.append("\"dots\": \(dots)") }
        return "{" + fields.joined(separator: ", ") + "}"
    }

    /// A JSON string: `PlanText.quoted` escapes as JSON does, and is never shortened here.
    private static func string(_ value: String) -> String {
        PlanText.quoted(value, maximumLength: .max)
    }
}
