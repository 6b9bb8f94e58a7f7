import ConsoleKitTerminal
import Foundation

/// The live progress line of `smpctl run` at a terminal:
///
///     Dots [##########--------------------] 90/191  47.1%  18 dots/s  ETA 0:06  hairline-front  running  interlocks armed
///
/// A ConsoleKit `ActivityBar`: the library styles it and, through `LiveLine`, erases and redraws
/// it, so no escape code is written here. It never wraps: ConsoleKit counts wrapped rows per
/// styled fragment, not per line, so a wrapped line would not be erased whole. On a narrow
/// terminal the bar shrinks, then the least useful fields go (rate, region, percentage,
/// ETA), and only then is the line cut short.
struct SessionProgressBar: ActivityBar {
    var title = "Dots"
    var done = 0
    /// The plan's dots, skipped ones included.
    var total = 0
    /// Left out by the operator's decision: never done, shown beside the counts.
    var skipped = 0
    var dotsPerSecond: Double = 0
    var etaSeconds: Double?
    var region: String?
    var deviceState = "—"
    /// The interlock state's name, empty before the first transition.
    var interlock = ""
    /// False under NO_COLOR: the same text, unstyled.
    var colours = true
    /// The terminal's width; the whole line, title included, fits in one column less (the
    /// last column would move some terminals' cursor to the next row). Nil: no limit.
    var columns: Int?

    /// The fields after the counts, in the order they are given up when space runs short.
    enum Field: CaseIterable { case rate, region, percent, eta, deviceState, interlock }

    /// The bar never gets narrower than this before fields are dropped.
    static let narrowestBar = 10

    func renderActiveBar(tick: UInt, width: Int) -> ConsoleText {
        var barWidth = max(width, 5)
        var dropped: Set<Field> = []
        var text = compose(barWidth: barWidth, without: dropped)
        guard let columns else { return text }
        let budget = max(columns - 1 - title.count - 1, 1)  // title and its space come first
        if text.description.count > budget, barWidth > Self.narrowestBar {
            barWidth = max(Self.narrowestBar, barWidth - (text.description.count - budget))
            text = compose(barWidth: barWidth, without: dropped)
        }
        for field in Field.allCases where text.description.count > budget {
            dropped.insert(field)
            text = compose(barWidth: barWidth, without: dropped)
        }
        return text.description.count > budget ? Self.truncate(text, to: budget) : text
    }

    private func compose(barWidth: Int, without dropped: Set<Field>) -> ConsoleText {
        let filled = total > 0 ? min(barWidth, barWidth * done / total) : 0
        var text: ConsoleText = "["
        text += String(repeating: "#", count: filled).consoleText(style(.info))
        text += String(repeating: "-", count: barWidth - filled).consoleText()
        text += "] \(done)/\(total)\(skipped > 0 ? " (\(skipped) skipped)" : "")".consoleText()
        if !dropped.contains(.percent) {
            text += " \(String(format: "%5.1f%%", 100 * Double(done) / Double(max(total, 1))))".consoleText()
        }
        if !dropped.contains(.rate) { text += "  \(String(format: "%.0f", dotsPerSecond)) dots/s".consoleText() }
        if !dropped.contains(.eta) { text += "  ETA \(etaSeconds.map(RunReporter.duration) ?? "–")".consoleText() }
        if let region, !dropped.contains(.region) { text += "  \(region)".consoleText() }
        if !dropped.contains(.deviceState) {
            text += "  ".consoleText() + deviceState.consoleText(style(Self.deviceStyle(deviceState)))
        }
        if !interlock.isEmpty, !dropped.contains(.interlock) {
            text += "  interlocks ".consoleText() + interlock.consoleText(style(Self.interlockStyle(interlock)))
        }
        return text
    }

    /// The first `columns` characters of `text`, the last one an ellipsis, styles kept.
    static func truncate(_ text: ConsoleText, to columns: Int) -> ConsoleText {
        var remaining = columns - 1
        var fragments: [ConsoleTextFragment] = []
        for fragment in text.fragments where remaining > 0 {
            let kept = String(fragment.string.prefix(remaining))
            remaining -= kept.count
            fragments.append(ConsoleTextFragment(string: kept, style: fragment.style))
        }
        fragments.append(ConsoleTextFragment(string: "…"))
        return ConsoleText(fragments: fragments)
    }

    private func style(_ style: ConsoleStyle) -> ConsoleStyle { colours ? style : .plain }

    static func deviceStyle(_ state: String) -> ConsoleStyle {
        switch state {
        case "running", "ready": .success
        case "held": .warning
        case "estop", "fault": .init(color: .red, isBold: true)
        default: .plain
        }
    }

    static func interlockStyle(_ state: String) -> ConsoleStyle {
        switch state {
        case "armed": .success
        case "held": .warning
        case "estopped", "faulted": .init(color: .red, isBold: true)
        default: .plain
        }
    }
}

/// The progress line at the bottom of a terminal, with alarm lines and questions printed above
/// it: ConsoleKit's ephemeral output (`pushEphemeral`/`popEphemeral`) erases the line before
/// anything else is printed and the line is drawn again below it. Not thread-safe: the
/// reporter calls it under its lock.
final class LiveLine {
    private let console: Terminal
    private var shown = false
    private var tick: UInt = 0
    /// Where the line cannot be redrawn in place, the last one printed.
    private var lastPrinted: String?
    /// While a question waits for typed input the line stays off: the echo of the operator's
    /// Enter would move the cursor and the next erase would hit the wrong line.
    var suspended = false
    let colours: Bool
    /// The bar last drawn, frozen on the screen when a question takes the line's place.
    private var lastBar: SessionProgressBar?

    init() {
        Self.reopenStandardOutputWriteOnly()
        console = Terminal()
        let environment = ProcessInfo.processInfo.environment
        if environment["TERM"] == "dumb" { console.stylizedOutputOverride = false }
        colours = environment["NO_COLOR"].map(\.isEmpty) ?? true
    }

    /// ConsoleKit 4.16.2's `Terminal.command` (each erase and cursor move) flushes through
    /// `fdopen(STDOUT_FILENO, "w+")` and never closes that FILE: 481 bytes leak per command on a
    /// terminal opened read-write, ~12 MB an hour at our redraw rate (counted with an
    /// LD_PRELOAD wrapper of fdopen: 214 FILEs in a 31 s session). On a write-only descriptor
    /// that `fdopen` fails (EINVAL, the mode asks for reading) and `fflush(NULL)` flushes
    /// instead, so standard output is reopened write-only on the same terminal. (`fflush(NULL)`
    /// takes every stdio stream's lock: nothing here may block inside stdio — answers are read
    /// with read(2), `Prompt.readLine`.)
    private static func reopenStandardOutputWriteOnly() {
        let flags = fcntl(STDOUT_FILENO, F_GETFL)
        guard flags >= 0, flags & O_ACCMODE == O_RDWR, let name = ttyname(STDOUT_FILENO) else { return }
        let writeOnly = open(name, O_WRONLY | O_NOCTTY | O_CLOEXEC)
        guard writeOnly >= 0 else { return }
        fflush(nil)  // what stdio holds for the old descriptor goes out first
        _ = dup2(writeOnly, STDOUT_FILENO)  // the new STDOUT_FILENO is not close-on-exec
        close(writeOnly)
    }

    /// False on a terminal that cannot move its cursor (TERM=dumb): redraw seldom, line by line.
    var canRedrawInPlace: Bool { console.stylizedOutputOverride ?? console.supportsANSICommands }

    func draw(_ bar: SessionProgressBar) {
        guard !suspended else { return }
        var bar = bar
        let columns = console.size.width
        bar.columns = columns > 0 ? columns : nil
        console.activityBarWidth = 30
        if !canRedrawInPlace {
            // Each draw is a new line here: print only what changed.
            let plain = bar.renderActiveBar(tick: 0, width: 30).description
            guard plain != lastPrinted else { return }
            lastPrinted = plain
        }
        erase()
        tick &+= 1
        lastBar = bar
        console.pushEphemeral()
        bar.outputActivityIndicator(to: console, state: .active(tick: tick))
        shown = true
    }

    /// Takes the line off the screen (before other output).
    func erase() {
        guard shown else { return }
        console.popEphemeral()
        shown = false
    }

    /// A line above the progress line, styled.
    func print(_ text: String, style: ConsoleStyle = .plain) {
        erase()
        console.output(text.consoleText(colours ? style : .plain))
    }

    /// A question; the operator's answer is typed on the line below it.
    ///
    /// The progress line stays on the screen, frozen as it was (done, ETA, "held"), above the
    /// question: printed for good, no longer redrawn, so the echo of the answer cannot disturb it.
    func ask(_ text: String) {
        let wasShown = shown
        erase()
        if wasShown, let lastBar {
            lastBar.outputActivityIndicator(to: console, state: .active(tick: tick))
        }
        suspended = true
        console.output(text.consoleText(colours ? .init(color: .yellow, isBold: true) : .plain))
    }
}
