import XCTest
import Foundation
@testable import DeviceSim

final class FaultPlanTests: XCTestCase {
    func testParsesEveryItem() throws {
        let plan = try FaultPlan(spec: """
            corrupt=0.01, drop=5%, duplicate=0.2, delay-ack=30ms, garbage=0.5, stall-at=12:1.5s, \
            stall-at=13:800us, reset-at=40, disconnect-at=50, estop-at=60, estop-at=61, contact-loss-at=70, \
            over-depth-at=80, slow=2.5
            """)
        XCTAssertEqual(plan.corruptRate, 0.01)
        XCTAssertEqual(plan.dropRate, 0.05, accuracy: 1e-12)
        XCTAssertEqual(plan.duplicateRate, 0.2)
        XCTAssertEqual(plan.ackDelayMicroseconds, 30_000)
        XCTAssertEqual(plan.garbageRate, 0.5)
        XCTAssertEqual(plan.stallAt, [12: 1_500_000, 13: 800])
        XCTAssertEqual(plan.resetAt, [40])
        XCTAssertEqual(plan.disconnectAt, [50])
        XCTAssertEqual(plan.estopAt, [60, 61])
        XCTAssertEqual(plan.contactLossAt, [70])
        XCTAssertEqual(plan.overDepthAt, [80])
        XCTAssertEqual(plan.slowFactor, 2.5)
        XCTAssertTrue(plan.hasLinkFaults)
        XCTAssertEqual(try FaultPlan(spec: plan.description), plan, "description is a SPEC")
        XCTAssertEqual(try FaultPlan(spec: ""), .none)
        XCTAssertEqual(try FaultPlan(spec: " , "), .none)
        XCTAssertFalse(try FaultPlan(spec: "estop-at=3,slow=2").hasLinkFaults)
    }

    func testBadSpecsNameTheItem() {
        let cases: [(String, String, String)] = [
            ("drop=abc", "drop=abc", "RATE"),
            ("corrupt=1.5", "corrupt=1.5", "RATE"),
            ("drop=-0.1", "drop=-0.1", "RATE"),
            ("delay-ack=30", "delay-ack=30", "DURATION"),
            ("delay-ack=fast", "delay-ack=fast", "DURATION"),
            ("stall-at=5", "stall-at=5", "DOT:DURATION"),
            ("stall-at=x:5ms", "stall-at=x:5ms", "DOT"),
            ("stall-at=5:5ms,stall-at=5:6ms", "stall-at=5:6ms", "already planned"),
            ("reset-at=0", "reset-at=0", "DOT"),
            ("estop-at=-3", "estop-at=-3", "DOT"),
            ("slow=0", "slow=0", "FACTOR"),
            ("slow=inf", "slow=inf", "FACTOR"),
            ("drop=0.1,drop=0.2", "drop=0.2", "more than once"),
            ("explode=1", "explode=1", "unknown fault 'explode'"),
            ("drop", "drop", "KEY=VALUE"),
        ]
        for (spec, item, fragment) in cases {
            XCTAssertThrowsError(try FaultPlan(spec: spec), spec) { error in
                guard let error = error as? FaultPlanError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.item, item, spec)
                XCTAssertTrue(error.description.contains(fragment), "\(spec): \(error)")
                XCTAssertTrue(error.description.contains("'\(item)'"), "\(spec): \(error)")
            }
        }
    }

    func testJSONScenarioUsesTheSameKeys() throws {
        let json = """
            {"drop": 0.02, "delay-ack": "30ms", "estop-at": [120, 400], "stall-at": ["50:300ms"],
             "reset-at": 7, "slow": 2, "corrupt": "1%"}
            """
        let plan = try FaultPlan(jsonScenario: Data(json.utf8))
        XCTAssertEqual(plan, try FaultPlan(spec: "drop=0.02,delay-ack=30ms,estop-at=120,estop-at=400,stall-at=50:300ms,reset-at=7,slow=2,corrupt=1%"))

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("scenario-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try FaultPlan.load(scenarioFile: path), plan)

        XCTAssertThrowsError(try FaultPlan(jsonScenario: Data(#"{"drop": "lots"}"#.utf8))) { error in
            XCTAssertEqual((error as? FaultPlanError)?.item, "drop=lots")
        }
        XCTAssertThrowsError(try FaultPlan(jsonScenario: Data(#"{"meteor-at": 3}"#.utf8))) { error in
            XCTAssertEqual((error as? FaultPlanError)?.item, "meteor-at=3")
        }
        XCTAssertThrowsError(try FaultPlan(jsonScenario: Data(#"{"drop": true}"#.utf8)))
        XCTAssertThrowsError(try FaultPlan(jsonScenario: Data("[1, 2]".utf8)))
        XCTAssertThrowsError(try FaultPlan.load(scenarioFile: "/nonexistent/scenario.json")) { error in
            XCTAssertEqual((error as? FaultPlanError)?.item, "/nonexistent/scenario.json")
        }
    }

    func testSplitMix64IsTheReferenceSequence() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        var rng = SplitMix64(seed: 0)
        XCTAssertEqual(rng.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(rng.next(), 0x6E78_9E6A_A1B9_65F4)
        XCTAssertEqual(rng.next(), 0x06C4_5D18_8009_454F)
        for _ in 0..<1000 {
            let unit = rng.nextUnit()
            XCTAssertTrue(unit >= 0 && unit < 1)
            XCTAssertTrue((0..<7).contains(rng.nextInt(below: 7)))
        }
    }
}
