import Dispatch
import Foundation
import FirmwareProtocol
import SMPSystem
import XCTest

@testable import NeedleDriver

/// The hand-offs that keep the streaming path free of allocations (issue 16): a step's output
/// handed back to the machine (`LinkMachine.recycle`) and the I/O thread's batches to the owner's
/// queue (`BatchMailbox`). Neither may change what is written or delivered, nor its order.
final class LinkHandOffTests: XCTestCase {
    /// The same steps give the same bytes and actions whether each output is handed back or
    /// not; a handed-back output is emptied, keeping its storage.
    func testARecycledOutputChangesNothingTheMachineWritesOrSays() {
        var plain = LinkMachine(devicePath: "/dev/null")
        var recycling = LinkMachine(devicePath: "/dev/null")
        var steps: [(inout LinkMachine) -> LinkOutput] = [{ $0.connect(nonce: 7, now: 0) }]
        // Unanswered HELLOs go again on the machine's deadlines, then the handshake fails.
        var t: UInt64 = 0
        for _ in 0..<40 {
            t += 50_000_000
            let now = t
            steps.append { $0.tick(now: now) }
        }
        steps.append { $0.close() }
        var wroteSomething = false
        for step in steps {
            let expected = step(&plain)
            var output = step(&recycling)
            XCTAssertEqual(output, expected)
            if !output.bytes.isEmpty { wroteSomething = true }
            let capacity = output.bytes.capacity
            recycling.recycle(&output)
            XCTAssertTrue(output.bytes.isEmpty && output.actions.isEmpty, "the caller's copy is emptied")
            XCTAssertLessThanOrEqual(output.bytes.capacity, capacity)
        }
        XCTAssertTrue(wroteSomething, "the steps wrote HELLOs")
    }

    /// Batches posted from another thread arrive on the owner's queue, all of them, in the order
    /// posted, however the source coalesces them; none after `cancel`.
    func testTheMailboxDeliversEveryBatchInOrderOnTheQueueAndNoneAfterCancel() {
        let queue = DispatchQueue(label: "owner")
        let received = Locked<[UInt64]>([])
        let allThere = expectation(description: "every batch")
        let count: UInt64 = 5_000
        let mailbox = BatchMailbox(queue: queue) { batch in
            dispatchPrecondition(condition: .onQueue(queue))
            let total = received.withLock { list -> Int in
                list.append(batch.awaited ?? 0)
                return list.count
            }
            if total == Int(count) { allThere.fulfill() }
        }
        let poster = Thread {
            for number in 1...count {
                var batch = Batch()
                batch.awaited = number
                mailbox.post(batch)
            }
        }
        poster.start()
        wait(for: [allThere], timeout: 30)
        XCTAssertEqual(received.withLock { $0 }, Array(1...count))

        mailbox.cancel()
        queue.sync {}
        var late = Batch()
        late.awaited = 0
        mailbox.post(late)
        queue.sync {}
        queue.sync {}
        XCTAssertEqual(received.withLock { $0.count }, Int(count), "nothing delivered after cancel")
    }
}
