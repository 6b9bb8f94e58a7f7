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

    /// Sessions of a course 10–30 days apart: fewer than 10 days is a warning, never a refusal.
    func testASessionLessThanTenDaysAfterThePreviousOneIsAWarning() throws {
        let previous = try XCTUnwrap(PlanDate("2026-12-28"))
        let nine = ClinicalTiming.checkSessionSpacing(plan(transplant: nil, session: "2027-01-06"), previous: previous,
                                                      previousName: "s1.json", today: PlanDate("2026-11-25")!)
        XCTAssertEqual(nine?.code, .clinicalSessionsTooClose)
        XCTAssertEqual(nine?.isError, false)
        XCTAssertEqual(nine?.path, "session.date")
        XCTAssertTrue(nine?.message.contains("9 days after the previous session of its course (s1.json, 2026-12-28)") == true,
                      nine?.message ?? "")
        XCTAssertNil(ClinicalTiming.checkSessionSpacing(plan(transplant: nil, session: "2027-01-07"), previous: previous,
                                                        previousName: "s1.json", today: PlanDate("2026-11-25")!))
        // Without a session date, the day of the run counts.
        XCTAssertEqual(ClinicalTiming.checkSessionSpacing(plan(transplant: nil, session: nil), previous: previous,
                                                          previousName: "s1.json", today: PlanDate("2026-12-30")!)?.path, "$")
        XCTAssertEqual(PlanDate("1970-01-01")?.dayNumber, 0)
        XCTAssertEqual(PlanDate("2000-03-01")!.dayNumber - PlanDate("2000-02-28")!.dayNumber, 2, "2000 is a leap year")
        XCTAssertEqual(PlanDate("2100-03-01")!.dayNumber - PlanDate("2100-02-28")!.dayNumber, 1, "2100 is not")
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
