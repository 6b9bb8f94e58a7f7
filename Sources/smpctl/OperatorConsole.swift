import Dispatch
import Foundation
import SessionRunner
import SMPPlan
import SMPPlanReader
import SMPInterlocks
import SMPRecords
import SMPMachine
import SMPRender
import SMPStation

/// The operator's keyboard during a session: Ctrl-C and what is typed at the terminal.
///
/// - Before arming (the preflight question, the handshake): Ctrl-C ends the run at once, with
///   nothing armed and nothing sent; an open "Arm the applicator?" is answered no.
/// - Ctrl-C once: hold (the dot in the skin finishes, the needle retracts, the place is kept).
/// - Ctrl-C again: asks whether to end the session; only "y" ends it. A third Ctrl-C while that
///   question is open is taken as the answer: end now.
/// - While held: Enter resumes, when every interlock is healthy (else it says what blocks it).
/// - Ctrl-Z does not suspend smpctl during a session: it holds, as the first Ctrl-C.
///
/// One reader thread owns standard input for the whole run, so the preflight's "Arm?", the
/// hold's "Enter resumes" and the "end the session?" question never compete for the same line:
/// an answer can only ever reach the question that is open. Without a terminal nobody can answer:
/// a hold ends the session held (resumable), and a second Ctrl-C ends it at once.
///
/// Told to stop — SIGTERM, SIGHUP (the terminal closed), or its output gone (a closed pipe:
/// SIGPIPE is ignored so the write fails instead of killing the process) — the session ends as
/// soon as it is safe: held, the dot in the skin finished, resumable (`Session.requestEnd`).
final class OperatorConsole: @unchecked Sendable {  // mutable state guarded by `lock`
    enum Question: Equatable { case none, arm, resume, endSession }

    private let session: Session
    private let interlocks: Interlocks?
    private let reporter: RunReporter
    private let interactive: Bool
    private let readLine: @Sendable () -> PromptInput
    private let inputIsTerminal: @Sendable () -> Bool
    private let lock = NSLock()
    private var question = Question.none
    private var interrupts = 0
    private var held = false
    private var readerStarted = false
    private var streaming = false
    /// The preflight's answer, handed from the reader thread (or an interrupt) to `confirmArm`.
    private var armAnswer: Bool?
    private let armAnswered = DispatchSemaphore(value: 0)
    /// Ctrl-C came before arming: the run is ending, nothing may arm it any more.
    private var endedBeforeArming = false
    /// SIGTERM or SIGHUP came: the process is to exit once the session has ended (the station
    /// does not stay up for its summary then).
    private var toldToStop = false
    private let keyboard: OperatorKeyboard?
    /// The technician station's page, another face of this console: it sees the open question
    /// and answers through `stationCommand`, under the same rules as the keys.
    private let station: StationState?
    /// Whether a reader thread may take standard input: not when the station is the only way
    /// to answer (input not a terminal), where the end of input would answer "no" to arming.
    private let readsStandardInput: Bool
    private var signalSources: [any DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "smpctl.operator")

    /// - Parameters:
    ///   - readLine: where answers come from; standard input by default.
    ///   - inputIsTerminal: whether an end of file there was Ctrl-D typed at a terminal that is
    ///     still there (the keyboard can still answer) rather than the end of the input; `isatty`
    ///     says no after a hang-up (the terminal's ioctls fail).
    init(session: Session, interlocks: Interlocks?, reporter: RunReporter, interactive: Bool,
         station: StationState? = nil, readsStandardInput: Bool = true,
         readLine: @escaping @Sendable () -> PromptInput = { Prompt.readLine() },
         inputIsTerminal: @escaping @Sendable () -> Bool = { Output.stdinIsTerminal }) {
        self.session = session
        self.interlocks = interlocks
        self.reporter = reporter
        self.interactive = interactive
        self.station = station
        self.readsStandardInput = readsStandardInput
        self.readLine = readLine
        self.inputIsTerminal = inputIsTerminal
        keyboard = interactive ? OperatorKeyboard() : nil
    }

    /// Takes SIGINT, SIGTERM, SIGHUP and SIGPIPE away from their default (kill the process
    /// mid-dot) for the session's duration.
    func install() {
        for (number, handler) in [(SIGINT, interrupted), (SIGTERM, { self.terminated("SIGTERM") }),
                                  (SIGHUP, { self.terminated("SIGHUP: the terminal was closed") }),
                                  (SIGTSTP, suspendRefused)] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler(handler: handler)
            source.resume()
            signalSources.append(source)
        }
        signal(SIGPIPE, SIG_IGN)
        Output.onWriteFailure.withLock { hook in
            hook = { [session] failure in
                session.requestEnd(reason: "\(failure): nobody can follow the session")
            }
        }
    }

    func uninstall() {
        Output.onWriteFailure.withLock { $0 = nil }
        for source in signalSources { source.cancel() }
        // The session is over and its account printed: the exit status is decided. A Ctrl-C or
        // SIGTERM while the process exits (slow under a sanitizer, or with many records to
        // close) must not turn it into 130 or 143 for the script that reads it, so they stay
        // ignored until exit rather than going back to their default.
        for number in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { signal(number, SIG_IGN) }
        signal(SIGTSTP, SIG_DFL)  // the session is over: nothing is left unattended by a suspend
        lock.withLock { keyboard?.restore() }
    }

    /// Ctrl-Z (SIGTSTP, called on `queue`). A suspended smpctl would leave the applicator to
    /// hold on its lease, unattended, behind a shell prompt; during a session Ctrl-Z holds
    /// instead, as the first Ctrl-C does (the next Ctrl-C asks whether to end).
    func suspendRefused() {
        let (armed, isHeld) = lock.withLock { (streaming, held) }
        guard armed, !isHeld else {
            reporter.note("Ctrl-Z: smpctl is not suspended during a session.")
            return
        }
        holdAsFirstInterrupt(note: "Ctrl-Z: smpctl is not suspended during a session; holding instead — the dot "
                             + "in progress finishes, the needle retracts, the place is kept.")
    }

    /// A hold that counts as the first Ctrl-C (Ctrl-Z, the station's Hold): the next Ctrl-C at
    /// the terminal asks whether to end.
    private func holdAsFirstInterrupt(note: String) {
        lock.withLock { interrupts = max(interrupts, 1) }
        reporter.note(note)
        session.requestHold()
    }

    /// SIGTERM or SIGHUP (called on `queue`).
    func terminated(_ cause: String) {
        lock.withLock { toldToStop = true }
        // The end first: after SIGHUP the note's write fails, and its own end request (output
        // failed) must not be the one the record keeps.
        session.requestEnd(reason: "smpctl received \(cause)")
        lock.withLock { setQuestion(.none) }
        reporter.note("\(cause): ending the session — the dot in progress finishes, the needle retracts; "
                      + "resumable with `smpctl resume`.")
    }

    /// SIGTERM or SIGHUP ended the session.
    var wasToldToStop: Bool { lock.withLock { toldToStop } }

    /// The question open now.
    private var openQuestion: Question { lock.withLock { question } }

    /// Sees every session event after the reporter.
    func observe(_ event: SessionEvent) {
        switch event {
        case .armed:
            lock.withLock {
                streaming = true
                if question == .none { keyboard?.set(echo: false) }
            }
        case .held:
            lock.withLock { held = true }
            guard interactive || station != nil else {
                session.requestEndWhenHeld(reason: "held with no operator at a terminal to resume it; continue with smpctl resume")
                return
            }
            if openQuestion == .none { ask(.resume) }
        case .resumed:
            // A resumed session starts counting Ctrl-C afresh: the next one holds again.
            lock.withLock {
                held = false
                interrupts = 0
                if question == .resume { setQuestion(.none) }
            }
            reporter.closeQuestion()
        default:
            break
        }
    }

    /// The preflight's question, asked through the one reader of standard input; blocks the
    /// calling thread (not the session's queue) until the operator answers, input ends or Ctrl-C.
    func confirmArm(_ text: String) -> Bool {
        let start = lock.withLock { () -> Bool? in
            guard !endedBeforeArming else { return nil }
            armAnswer = nil
            setQuestion(.arm)
            defer { readerStarted = true }
            return !readerStarted
        }
        guard let start else { return false }
        reporter.ask("\(text) [y/N]" + (station == nil ? "" : " (or Arm on the station's page)"))
        if start && readsStandardInput { Thread.detachNewThread { [self] in readAnswers() } }
        armAnswered.wait()
        return lock.withLock { armAnswer ?? false }
    }

    /// Call with `lock` held: closes the arm question with `answer` and wakes `confirmArm`.
    private func answerArm(_ answer: Bool) {
        guard question == .arm else { return }
        armAnswer = answer
        setQuestion(.none)
        armAnswered.signal()
    }

    /// One Ctrl-C (called on `queue`; tests call it directly).
    func interrupted() {
        let (count, open, armed) = lock.withLock { () -> (Int, Question, Bool) in
            interrupts += 1
            return (interrupts, question, streaming)
        }
        if !armed && endBeforeArming(reason: "ended by the operator (Ctrl-C before arming)",
                                     note: "Ctrl-C before arming: ending the session; nothing was armed.") {
            return
        }
        if count == 1 {
            reporter.note("Ctrl-C: holding — the dot in progress finishes, the needle retracts, the place is kept. "
                          + "Ctrl-C again to end the session.")
            session.requestHold()
        } else if interactive && open != .endSession {
            ask(.endSession)
        } else {
            reporter.note(interactive ? "Ctrl-C again: ending the session now." : "Ctrl-C again: ending the session (no terminal to confirm at).")
            endSession(reason: interactive ? "ended by the operator (Ctrl-C three times)" : "ended by the operator (Ctrl-C twice, no terminal)")
        }
    }

    /// Ctrl-C or the station's End before the `.armed` event reached the console: nothing is
    /// armed yet, nothing to hold, no question about ending to ask — the run ends, nothing sent.
    /// The console's `streaming` lags the session, so the session decides (`endUnlessArmed`);
    /// false when it had armed a moment before: then the caller goes on as for a streaming
    /// session. An arm answer typed a moment later cannot be taken (decided under the lock).
    private func endBeforeArming(reason: String, note: String) -> Bool {
        let first = lock.withLock { () -> Bool in
            defer { endedBeforeArming = true }
            answerArm(false)
            return !endedBeforeArming
        }
        guard first else { return true }  // an earlier one ended it (one found it armed resets the flag)
        guard session.endUnlessArmed(reason: reason) else {
            lock.withLock { endedBeforeArming = false }
            reporter.note("The applicator had just been armed.")
            return false
        }
        reporter.note(note)
        return true
    }

    /// Call with `lock` held. Echo follows the question: on while one is open, off while streaming.
    private func setQuestion(_ new: Question) {
        if new != .none && question == .none { keyboard?.discardTypeAhead() }
        question = new
        keyboard?.set(echo: new != .none || !streaming)
        station?.setQuestion({
            switch new {
            case .none: .none
            case .arm: .arm
            case .resume: .resume
            case .endSession: .endSession
            }
        }())
    }

    private func ask(_ new: Question) {
        let start = lock.withLock { () -> Bool in
            setQuestion(new)
            defer { readerStarted = true }
            return !readerStarted
        }
        switch new {
        case .none, .arm:
            return
        case .resume:
            reporter.ask("Held. Press Enter to resume (every interlock must be healthy), or Ctrl-C to end the session."
                         + (station == nil ? "" : " On the station: Resume… or End session…"))
        case .endSession:
            reporter.ask(
                "End the session now? The needle retracts (a dot still in the skin is cut short: recorded, "
                    + "never repeated); the remaining dots stay resumable with `smpctl resume`. "
                    + "Type y and Enter to end, Enter alone to stay held (Ctrl-C again: end now). [y/N]")
        }
        if start && readsStandardInput { Thread.detachNewThread { [self] in readAnswers() } }
    }

    private func readAnswers() {
        while true {
            switch readLine() {
            case .line(let line):
                answered(line)
            case .endOfFile where inputIsTerminal():
                endOfFileTyped()
                // Each Ctrl-D is a key pressed; should a terminal ever report end of file
                // without one, this keeps the loop from spinning. Nothing typed is lost.
                Thread.sleep(forTimeInterval: 0.05)
            case .endOfFile, .closed:
                lock.withLock { answerArm(false) }  // no more input: nobody said yes
                // End of input: nobody can answer any more. An open "end?" stays unanswered
                // (= no); a hold stays held, and the session ends held only through Ctrl-C or
                // the usual paths.
                return
            }
        }
    }

    /// Ctrl-D at the terminal: never a yes and never a resume, and the keyboard still answers
    /// afterwards (it once stopped reading here, leaving a hold that Enter could not end).
    private func endOfFileTyped() {
        switch openQuestion {
        case .none:
            return
        case .arm:
            lock.withLock { answerArm(false) }
        case .endSession:
            answered("")  // as Enter alone: stay held
        case .resume:
            reporter.ask("Ctrl-D does not resume: still held. Press Enter to resume (every interlock must be healthy), "
                         + "or Ctrl-C to end the session.")
        }
    }

    /// One line typed by the operator.
    func answered(_ line: String) {
        let open = openQuestion
        switch open {
        case .none:
            return  // typing while streaming means nothing
        case .arm:
            let yes = ["y", "yes"].contains(line.trimmingCharacters(in: .whitespaces).lowercased())
            lock.withLock { answerArm(yes) }
        case .endSession:
            if ["y", "yes"].contains(line.trimmingCharacters(in: .whitespaces).lowercased()) {
                reporter.note("Ending the session, needle retracted.")
                endSession(reason: "ended by the operator (Ctrl-C, confirmed)")
                return
            }
            lock.withLock {
                setQuestion(.none)
                interrupts = 1  // the next Ctrl-C asks again
            }
            reporter.note("Not ended.")
            if lock.withLock({ held }) { ask(.resume) } else { reporter.closeQuestion() }
        case .resume:
            resumeIfHealthy()
        }
    }

    /// Enter at the hold's question, or Resume confirmed on the station's page.
    private func resumeIfHealthy() {
        if let blockers = interlocks?.status().blockers, !blockers.isEmpty {
            station?.setBlockers(blockers.map(\.description))
            reporter.ask("Cannot resume yet: \(blockers.map(\.description).joined(separator: "; ")). "
                         + "Put it right, then press Enter or Resume on the station (or Ctrl-C to end the session).")
            return
        }
        station?.setBlockers([])
        reporter.note("Resuming…")
        session.requestResume()  // the question closes on the `.resumed` event
    }

    /// A command from the station's page, carried out on the console's queue like a key: the
    /// same entry points and the same rules as the terminal (the page asked for its confirmation
    /// already, as the terminal asks for "y").
    func stationCommand(_ command: StationCommand) {
        queue.async { [self] in
            let (armed, isHeld, open) = lock.withLock { (streaming, held, question) }
            switch command {
            case .arm, .decline:
                lock.withLock { answerArm(command == .arm) }  // only while the preflight asks
            case .hold:
                guard armed, !isHeld else { return }
                holdAsFirstInterrupt(note: "Hold from the station: the dot in progress finishes, the needle retracts, the place is kept.")
            case .resume:
                guard isHeld, open == .resume else { return }
                resumeIfHealthy()
            case .end:
                if !armed && endBeforeArming(reason: "ended by the operator (station, before arming)",
                                             note: "Ended from the station before arming; nothing was armed.") {
                    return
                }
                reporter.note("Ending the session from the station, needle retracted.")
                endSession(reason: "ended by the operator (station, confirmed)")
            }
        }
    }

    private func endSession(reason: String) {
        lock.withLock { setQuestion(.none) }
        session.requestAbort(reason: reason)
    }
}
