@testable import SessionRunner
import SMPPlan
import XCTest

/// `DotsByID` answers exactly what the dictionary it replaced answered: the first dot in file
/// order with the id, nil for an id not in the plan.
final class DotsByIDTests: XCTestCase {
    func testLooksUpLikeTheDictionaryItReplaced() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<200 {
            let count = Int.random(in: 0...300, using: &generator)
            var ids = (0..<count).map { UInt32($0 * 3 + 1) }
            switch round % 3 {
            case 0: break  // ascending, the usual plan
            case 1: ids.shuffle(using: &generator)
            default:  // shuffled with repeats (a plan that failed validation)
                ids = ids.map { _ in UInt32.random(in: 1...UInt32(max(count / 2, 1)), using: &generator) }
            }
            let dots = ids.enumerated().map { index, id in
                PlanDot(id: id, xMicrometres: Int32(index), yMicrometres: 0, depthMicrometres: 600,
                        dwellMicroseconds: 100_000, region: "r\(index)", index: index)
            }
            let dictionary = Dictionary(dots.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
            let index = DotsByID(dots)
            for id in UInt32(0)...UInt32(count * 3 + 2) {
                XCTAssertEqual(index[id], dictionary[id], "round \(round), id \(id)")
            }
            XCTAssertNil(index[.max])
        }
    }
}
