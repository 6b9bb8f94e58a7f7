/// Text put into SVG and HTML: the one escaper of every picture and page smpctl writes.
enum XMLText {
    /// `text` safe inside an element or a quoted attribute: the five XML entities, and the
    /// characters XML 1.0 forbids (control characters other than tab, LF, CR; U+FFFE, U+FFFF)
    /// replaced by U+FFFD so that a name in a plan cannot make the file unreadable.
    static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&apos;"
            case _ where scalar.value < 0x20 && scalar != "\t" && scalar != "\n" && scalar != "\r":
                result += "\u{FFFD}"
            case "\u{FFFE}", "\u{FFFF}": result += "\u{FFFD}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
