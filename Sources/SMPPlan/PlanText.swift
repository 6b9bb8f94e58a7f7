// Text helpers shared by the loader and the validator: paths and numbers as people read them.

package enum PlanText {
    /// A number as written in a JSON file: `2.1`, `150`, `1e-05`, `-3.25`.
    package static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 {
            return String(Int64(value))
        }
        return String(describing: value)
    }

    /// Micrometres (or microseconds) shown in millimetres (or milliseconds): 1500 → "1.5",
    /// 150000 → "150", 1234 → "1.234", -500 → "-0.5".
    package static func milli(_ micro: Int64) -> String {
        let magnitude = micro.magnitude
        let whole = magnitude / 1000
        let fraction = magnitude % 1000
        var text = micro < 0 ? "-" : ""
        text += String(whole)
        if fraction != 0 {
            var digits = String(fraction)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text
    }

    package static func milli(_ micro: Int32) -> String { milli(Int64(micro)) }

    /// A string value quoted as JSON would, shortened to keep messages on one line.
    package static func quoted(_ string: String, maximumLength: Int = 60) -> String {
        var shown = string
        var suffix = ""
        if shown.count > maximumLength {
            shown = String(shown.prefix(maximumLength))
            suffix = "…"
        }
        var text = "\""
        for scalar in shown.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\t": text += "\\t"
            case "\r": text += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16)
                    text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    text.unicodeScalars.append(scalar)
                }
            }
        }
        return text + "\"" + suffix
    }

    /// A key appended to a path: `.depth_mm` when it is a plain identifier, `["odd key"]` otherwise.
    package static func append(key: String, to path: String) -> String {
        let isIdentifier = !key.isEmpty && key.utf8.enumerated().allSatisfy { offset, byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || byte == UInt8(ascii: "_")
                || (offset > 0 && byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
        }
        if isIdentifier {
            return path.isEmpty ? key : path + "." + key
        }
        return path + "[" + quoted(key, maximumLength: 40) + "]"
    }

    /// A `Codable` coding path in the plan's style: `dots[12].depth_mm`; the root is `$`.
    package static func path(_ codingPath: [any CodingKey]) -> String {
        var path = ""
        for key in codingPath {
            if let index = key.intValue {
                path += "[\(index)]"
            } else {
                path = append(key: key.stringValue, to: path)
            }
        }
        return path.isEmpty ? "$" : path
    }

    /// Levenshtein distance with adjacent transpositions counted as one edit (optimal string
    /// alignment), for "did you mean" hints on unknown keys.
    package static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous2 = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], previous2[j - 2] + 1)
                }
            }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[b.count]
    }

    /// The closest known key within two edits, if any.
    package static func suggestion(for key: String, among known: [String]) -> String? {
        let lowered = key.lowercased()
        // A unit left off ("depth" for "depth_mm") is the likeliest slip of all.
        if let stem = known.first(where: { $0.hasPrefix(lowered + "_") }) { return stem }
        // One edit for short keys, two from eight characters: "notes" is not a typo of "dots".
        let allowed = max(1, min(2, lowered.count / 4))
        var best: (key: String, distance: Int)?
        for candidate in known {
            let distance = editDistance(lowered, candidate)
            if distance <= allowed, distance < (best?.distance ?? Int.max) {
                best = (candidate, distance)
            }
        }
        return best?.key
    }

    /// ", dot id 13" style suffix used in dot messages; empty when the id is unknown.
    package static func idSuffix(_ id: UInt32?) -> String {
        guard let id, id != 0 else { return "" }
        return " (dot id \(id))"
    }
}
