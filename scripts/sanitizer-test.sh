#!/usr/bin/env bash
# The whole XCTest suite under a sanitizer (docs/reliability.md, "Sanitizers"):
#   scripts/sanitizer-test.sh thread|address
# Every process of the run (the test bundle and each smpctl it starts) writes its sanitizer
# reports to a file of its own under the report folder: any report fails the run, whatever the
# test concluded. A test that fails without a report gets one rerun alone, because the sanitizer
# slows everything 2-15x and a few session tests hold the applicator on a 100 ms lease (a busy
# machine ends them "lease expired": issue 15, not a memory or thread error); a second failure
# fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kind=${1:?thread or address}
case $kind in
    thread) scratch=.build-tsan ;;
    address) scratch=.build-asan ;;
    *) echo "sanitizer-test: thread or address, not $kind" >&2; exit 64 ;;
esac
SWIFT=${SWIFT:-swift}
reports=$PWD/$scratch/sanitizer-reports
rm -rf "$reports"; mkdir -p "$reports"
log=$scratch/sanitizer-test.log

export TSAN_OPTIONS="second_deadlock_stack=1 suppressions=$PWD/scripts/tsan.supp log_path=$reports/report"
export ASAN_OPTIONS="detect_leaks=1 log_path=$reports/report"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp print_suppressions=0"

$SWIFT build --scratch-path "$scratch" --sanitize="$kind" --build-tests
run() { $SWIFT test --scratch-path "$scratch" --sanitize="$kind" --skip-build --disable-swift-testing "$@"; }

status=0
run 2>&1 | tee "$log" >/dev/null || status=$?
grep -E "Executed [0-9]+ tests" "$log" | tail -1 || true

report_check() {
    if compgen -G "$reports/report*" >/dev/null; then
        echo "sanitizer-test: $kind sanitizer reports (the first of each):" >&2
        for file in "$reports"/report*; do echo "== $file" >&2; head -60 "$file" >&2; done
        exit 1
    fi
}
report_check

if [ "$status" != 0 ]; then
    mapfile -t failed < <(sed -n "s/^Test Case '\([A-Za-z0-9_]*\)\.\([A-Za-z0-9_]*\)' failed.*/\1\/\2/p" "$log" | sort -u)
    if [ ${#failed[@]} = 0 ]; then
        echo "sanitizer-test: the test run failed ($status) without a failed test case (crash?); log: $log" >&2
        tail -40 "$log" >&2
        exit 1
    fi
    for test in "${failed[@]}"; do
        echo "sanitizer-test: $test failed under the $kind sanitizer; once more, alone:"
        grep -A12 "error: ${test/\//.} " "$log" | head -12 || true
        if ! run --filter "$test\$" 2>&1 | tee -a "$log.rerun" | grep -E "Executed [0-9]+ test" | tail -1; then :; fi
        report_check
        if ! grep -q "Test Case '${test/\//.}' passed" "$log.rerun"; then
            echo "sanitizer-test: $test failed twice under the $kind sanitizer" >&2
            exit 1
        fi
    done
    echo "sanitizer-test: passed after rerunning alone: ${failed[*]}"
fi
echo "sanitizer-test: the whole suite under the $kind sanitizer: no report, no failing test"
