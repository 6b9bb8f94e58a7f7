import Dispatch
import SMPSystem
import XCTest

@testable import SessionRunner

/// The journal's grouping (issue 15, host CPU at an applicator's pace): done dots share a commit
/// within the lag, a claim takes them with it at once, the plan's last dot does not wait.
final class RecordJournalTests: XCTestCase {
    /// Each batch applied, in order.
    final class Recorder: SessionRecorder, @unchecked Sendable {
        let batches = Locked<[RecordBatch]>([])
        func open(_ opening: RecordOpening) throws(RecordStoreError) -> OpenedRecord {
            OpenedRecord(sessionID: 1, remaining: nil, doneIDs: [], skippedCount: 0)
        }
        func apply(_ batch: RecordBatch, session: Int64) throws(RecordStoreError) {
            batches.withLock { $0.append(batch) }
        }
        func release(session: Int64) {}
    }

    private let target = DispatchQueue(label: "RecordJournalTests.session")

    private func journal(_ recorder: Recorder, lag: DispatchTimeInterval,
                         limit: Int = RecordJournal.defaultDoneCommitLimit,
                         committed: @escaping (RecordBatch) -> Void) -> RecordJournal {
        RecordJournal(recorder: recorder, sessionID: 1, target: target, doneCommitLag: lag, doneCommitLimit: limit,
                      onCommitted: committed, onFailure: { XCTFail("commit failed: \($0)") })
    }

    private static func done(_ id: UInt32) -> RecordBatch.Done { RecordBatch.Done(dotID: id, deviceDoneCount: id) }

    func testDoneDotsShareOneCommitWithinTheLag() {
        let recorder = Recorder()
        let all = expectation(description: "five dots committed")
        let count = Locked(0)
        let journal = journal(recorder, lag: .milliseconds(300)) { batch in
            if count.withLock({ $0 += batch.done.count; return $0 }) == 5 { all.fulfill() }
        }
        for id in 1...5 as ClosedRange<UInt32> {
            journal.submitDone(Self.done(id))
            usleep(5_000)
        }
        wait(for: [all], timeout: 10)
        let batches = recorder.batches.withLock { $0 }
        XCTAssertEqual(batches.flatMap(\.done).map(\.dotID), [1, 2, 3, 4, 5], "in the order reported")
        // 25 ms of dots inside a 300 ms lag: one commit (two if the machine stalled past the lag).
        XCTAssertLessThanOrEqual(batches.count, 2, "a commit per dot")
    }

    func testAClaimTakesTheWaitingDoneDotsWithItAtOnce() {
        let recorder = Recorder()
        let claimed = expectation(description: "claim committed")
        let journal = journal(recorder, lag: .seconds(600)) { batch in
            if !batch.claims.isEmpty { claimed.fulfill() }
        }
        journal.submitDone(Self.done(1))
        journal.submitDone(Self.done(2))
        usleep(200_000)
        XCTAssertTrue(recorder.batches.withLock { $0.isEmpty }, "done dots waited for the lag")
        journal.submit(urgent: true) { $0.claims.append(contentsOf: [3, 4]) }
        wait(for: [claimed], timeout: 10)
        let batches = recorder.batches.withLock { $0 }
        XCTAssertEqual(batches.count, 1)
        XCTAssertEqual(batches.first?.done.map(\.dotID), [1, 2])
        XCTAssertEqual(batches.first?.claims, [3, 4])
    }

    func testTheLastDotIsCommittedWithoutWaiting() {
        let recorder = Recorder()
        let committed = expectation(description: "last dot committed")
        let journal = journal(recorder, lag: .seconds(600)) { batch in
            if batch.done.contains(where: { $0.dotID == 2 }) { committed.fulfill() }
        }
        journal.submitDone(Self.done(1))
        journal.submitDone(Self.done(2), urgent: true)
        wait(for: [committed], timeout: 10)
        XCTAssertEqual(recorder.batches.withLock { $0.flatMap(\.done).map(\.dotID) }, [1, 2])
    }

    /// The lag bounds how long a done waits; the limit bounds how many wait (the window of loss
    /// a host crash leaves to the device's count): the limit-th is committed at once with the
    /// others, and those after it wait again.
    func testNoMoreThanTheLimitWaitForTheLag() {
        let recorder = Recorder()
        let four = expectation(description: "four dots committed")
        let journal = journal(recorder, lag: .seconds(600), limit: 4) { batch in
            if batch.done.count == 4 { four.fulfill() }
        }
        for id in 1...3 as ClosedRange<UInt32> { journal.submitDone(Self.done(id)) }
        usleep(200_000)
        XCTAssertTrue(recorder.batches.withLock { $0.isEmpty }, "three of four waited for the lag")
        journal.submitDone(Self.done(4))
        wait(for: [four], timeout: 10)
        for id in 5...7 as ClosedRange<UInt32> { journal.submitDone(Self.done(id)) }
        usleep(200_000)
        XCTAssertEqual(recorder.batches.withLock { $0.map { $0.done.map(\.dotID) } }, [[1, 2, 3, 4]],
                       "the dots after the limit wait again")
        let eight = expectation(description: "the next four committed")
        journal.afterCommit { eight.fulfill() }
        wait(for: [eight], timeout: 10)
        XCTAssertEqual(recorder.batches.withLock { $0.map { $0.done.map(\.dotID) } }, [[1, 2, 3, 4], [5, 6, 7]])
    }

    func testAfterCommitRunsOnceTheWaitingDoneDotsAreCommitted() {
        let recorder = Recorder()
        let ran = expectation(description: "afterCommit ran")
        let journal = journal(recorder, lag: .seconds(600)) { _ in }
        journal.submitDone(Self.done(7))
        journal.afterCommit {
            XCTAssertEqual(recorder.batches.withLock { $0.flatMap(\.done).map(\.dotID) }, [7])
            ran.fulfill()
        }
        wait(for: [ran], timeout: 10)
    }
}
