import XCTest

@testable import SMPPlan
@testable import SMPPlanReader

final class ClinicalTimingTests: XCTestCase {
    func plan(transplant: String?, session: String?) -> Plan {
        Plan(planID: "p", dots: [PlanDot(id: 1, xMicrometres: 0, yMicrometres: 0, depthMicrometres: 800,
                                         dwellMicroseconds: 50_000, index: 0)],
             client: PlanClient(reference: "C", hairTransplantDate: transplant.flatMap(PlanDate.init)),
             session: PlanSession(number: 1, of: 3, date: session.flatMap(PlanDate.init)))
    }

    func codes(_ transplant: String?, _ session: String?, today: String = "2026-11-25") -> [PlanIssue.Code] {
        ClinicalTiming.check(plan(transplant: transplant, session: session), today: PlanDate(today)!).map(\.code)
    }

    func testLessThanSixMonthsIsAnErrorNamingTheEarliestDate() {
        let issues = ClinicalTiming.check(plan(transplant: "2026-08-31", session: "2027-02-27"), today: PlanDate("2026-11-25")!)
        XCTAssertEqual(issues.map(\.code), [.clinicalTooSoonAfterTransplant])
        XCTAssertEqual(issues.first?.path, "session.date")
        XCTAssertTrue(issues.first!.message.contains("2027-02-28"), issues.first!.message)  // 31 Aug + 6 months, clamped
        XCTAssertTrue(issues.first!.isError)
    }

    func testExactlySixMonthsIsAllowedWithAWarningUntilTwelve() {
        XCTAssertEqual(codes("2026-01-15", "2026-07-15"), [.clinicalTimingCaution])
        XCTAssertEqual(codes("2026-01-15", "2027-01-14"), [.clinicalTimingCaution])
        XCTAssertEqual(codes("2026-01-15", "2027-01-15"), [])
    }

    func testSessionBeforeAPlannedTransplantIsAWarning() {
        XCTAssertEqual(codes("2027-01-15", "2026-12-10"), [.clinicalTimingCaution])
    }

    func testWithoutASessionDateTheDayOfTheRunCounts() {
        XCTAssertEqual(codes("2026-10-01", nil, today: "2026-11-25"), [.clinicalTooSoonAfterTransplant])
        XCTAssertEqual(codes("2024-10-01", nil, today: "2026-11-25"), [])
    }

    func testNoTransplantDateNoRule() {
        XCTAssertEqual(codes(nil, "2026-11-25"), [])
    }

    func testLeapYearClamp() {
        XCTAssertEqual(PlanDate("2023-08-31")!.addingMonths(6), PlanDate("2024-02-29"))
        XCTAssertEqual(PlanDate("2026-12-15")!.addingMonths(12), PlanDate("2027-12-15"))
    }
}
