import Foundation

/// The terminal modes of the operator's keyboard (standard input) during a session.
///
/// While dots stream, nothing the operator types is echoed: an echoed key or Enter would move
/// the cursor under the progress line, which is redrawn in place. While a question is open the
/// answer is echoed as usual. Control characters are never echoed as `^C`, whose two columns
/// would shift the line printed next. What was typed before a question opens is discarded, so
/// an Enter pressed while streaming cannot answer a later "Press Enter to resume".
///
/// Not thread-safe: `OperatorConsole` calls it under its lock.
final class OperatorKeyboard {
    private let fd: CInt
    private let original: termios
    private var restored = false

    /// Nil when `fd` is not a terminal.
    init?(fd: CInt = STDIN_FILENO) {
        var attributes = termios()
        guard Self.retryingInterrupts({ tcgetattr(fd, &attributes) }) else { return nil }
        self.fd = fd
        self.original = attributes
        set(echo: attributes.c_lflag & tcflag_t(ECHO) != 0)
    }

    /// Echo typed characters (ECHOCTL stays off); the question's answer is visible, keys typed
    /// while streaming are not.
    ///
    /// The corresponding C function is `tcsetattr`.
    func set(echo: Bool) {
        guard !restored else { return }
        var attributes = original
        attributes.c_lflag &= ~tcflag_t(ECHOCTL)
        if echo { attributes.c_lflag |= tcflag_t(ECHO) } else { attributes.c_lflag &= ~tcflag_t(ECHO) }
        _ = Self.retryingInterrupts { tcsetattr(fd, TCSANOW, &attributes) }
    }

    /// Throws away what was typed and not yet read.
    ///
    /// The corresponding C function is `tcflush` (`TCIFLUSH`).
    func discardTypeAhead() {
        _ = Self.retryingInterrupts { tcflush(fd, TCIFLUSH) }
    }

    /// The modes the session found; later calls change nothing.
    func restore() {
        guard !restored else { return }
        restored = true
        var attributes = original
        _ = Self.retryingInterrupts { tcsetattr(fd, TCSANOW, &attributes) }
    }

    private static func retryingInterrupts(_ body: () -> CInt) -> Bool {
        while true {
            if body() == 0 { return true }
            if errno != EINTR { return false }
        }
    }
}
