#!/usr/bin/env bash
# Runs every smpctl benchmark (docs/performance.md) and writes the results:
#   Benchmarks/results/latest.json   every figure, as distributions, with the machine and commands
#   Benchmarks/results/latest.txt    the same, one entry per figure with its command
#   Benchmarks/results/latest.md     the table as markdown (what docs/performance.md quotes)
#   Benchmarks/results/raw/          each step's own output (package-benchmark text, JSON, logs)
#
#   scripts/bench-run.sh              everything (about 30 minutes on 2 cores, plus the first builds)
#   BENCH_ONLY="codec fullpath" scripts/bench-run.sh    some steps: codec fullpath records allocs
#                                                       link underruns cpu estop planload rss
#   BENCH_QUICK=1 scripts/bench-run.sh                  fewer runs and trials (a smoke test)
#   (with BENCH_ONLY the other rows of the report keep their previous raw results, if any)
#
# Needs: swift, python3, /usr/bin/time, strace and gcc (records, allocs rows); rt-tests (cyclictest) and stress-ng for the e-stop and
# underrun rows (apt-get install rt-tests stress-ng; the hog falls back to `yes`). The e-stop row
# runs cyclictest at SCHED_FIFO 80: run as root. The machine is shared: check `uptime` first and
# compare load averages (each step records its own).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/Benchmarks"
OUT="${BENCH_OUT:-$BENCH/results}"
RAW="$OUT/raw"
PLANS="$BENCH/plans"
ONLY="${BENCH_ONLY:-codec fullpath records allocs link underruns cpu estop planload rss}"
QUICK="${BENCH_QUICK:-0}"
SWIFT="${SWIFT:-swift}"

want() { [[ " $ONLY " == *" $1 "* ]]; }
say() { printf 'bench: %s\n' "$*" >&2; }
if [[ "$QUICK" == 1 ]]; then
    RUNS=1; LINK_RUNS=1; UNDERRUN_RUNS=1; ISSUE_HOG_RUNS=1; CPU_RUNS=1; TRIALS=1000; LOAD_RUNS=3; RSS_RUNS=1
else
    RUNS=5; LINK_RUNS=3; UNDERRUN_RUNS=2; ISSUE_HOG_RUNS=10; CPU_RUNS=3; TRIALS=10000; LOAD_RUNS=7; RSS_RUNS=2
fi

mkdir -p "$RAW"
python3 "$ROOT/scripts/bench-make-plans.py" "$PLANS"

say "building (release; the first build of this package takes ~10 minutes on 2 cores)"
( cd "$BENCH" && "$SWIFT" build -c release --product smp-bench >&2 )
BIN="$(cd "$BENCH" && "$SWIFT" build -c release --show-bin-path)"
HARNESS="$BIN/smp-bench"
SMPCTL="$BIN/smpctl"
if ! ( cd "$BENCH" && "$SWIFT" build -c release --product smpctl >&2 ); then
    say "smpctl did not build: the rss row and the \`smpctl validate\` column are skipped"
    SMPCTL=""
fi

{
    echo "{"
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"commit\": \"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- Sources 2>/dev/null || echo '+uncommitted Sources changes')\","
    echo "  \"nproc\": $(nproc),"
    echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')\","
    echo "  \"kernel\": \"$(uname -r)\","
    echo "  \"swift\": \"$("$SWIFT" --version 2>/dev/null | head -1 | sed 's/"/\\"/g')\","
    echo "  \"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\""
    echo "}"
} > "$RAW/machine.json"
say "machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

step() {  # step NAME COMMAND...: runs COMMAND, JSON to raw/NAME.json, log to raw/NAME.log
    local name="$1"; shift
    say "$name: $*"
    echo "$*" > "$RAW/$name.cmd"
    if ! "$@" > "$RAW/$name.json" 2> >(tee "$RAW/$name.log" >&2); then
        sleep 0.2
        say "$name FAILED (see $RAW/$name.log)"
        echo "{\"figure\": \"$name\", \"error\": \"failed, see raw/$name.log\"}" > "$RAW/$name.json"
    fi
}

if want codec; then
    say "codec: swift package benchmark --target Codec"
    ( cd "$BENCH" && "$SWIFT" package --disable-sandbox benchmark --target Codec --no-progress \
        --format text ) > "$RAW/codec.txt" 2> "$RAW/codec.log" || say "codec FAILED (see $RAW/codec.log)"
    echo "swift package --disable-sandbox benchmark --target Codec --no-progress --format text" > "$RAW/codec.cmd"
fi

if want fullpath; then
    step fullpath "$HARNESS" fullpath --plan "$PLANS/bench-20k.json" --runs "$RUNS"
    step fullpath-norecords "$HARNESS" fullpath --plan "$PLANS/bench-20k.json" --runs "$RUNS" --no-records
fi

if want records; then
    # Issue 16: one fdatasync per group commit. The harness counts the record's write
    # transactions (record_commits); strace counts the process's fdatasync and fsync calls.
    # A 250 ms lease: under strace every syscall is slower, and a 100 ms lease can lapse (issue 15).
    say "records: strace -f -c -e trace=fdatasync,fsync $HARNESS fullpath --plan $PLANS/bench-20k.json --runs 1 --lease-ms 250"
    echo "strace -f -c -e trace=fdatasync,fsync -o raw/records-strace.txt $HARNESS fullpath --plan $PLANS/bench-20k.json --runs 1 --lease-ms 250" > "$RAW/records.cmd"
    if ! strace -f -c -e trace=fdatasync,fsync -o "$RAW/records-strace.txt" \
            "$HARNESS" fullpath --plan "$PLANS/bench-20k.json" --runs 1 --lease-ms 250 > "$RAW/records.json" 2> "$RAW/records.log"; then
        say "records FAILED (see $RAW/records.log)"
        echo '{"figure": "records", "error": "failed, see raw/records.log"}' > "$RAW/records.json"
    fi
fi

if want allocs; then
    # Allocations per dot on the host path (the simulator in its own process), ARM to the end,
    # from the LD_PRELOAD counter (scripts/bench-malloc-count.c), records on and off.
    MALLOC_SO="$OUT/bench-malloc-count.so"
    gcc -O2 -shared -fPIC -o "$MALLOC_SO" "$ROOT/scripts/bench-malloc-count.c"
    step allocs env LD_PRELOAD="$MALLOC_SO" "$HARNESS" fullpath --plan "$PLANS/bench-20k.json" --runs "$RUNS" --device-process
    step allocs-norecords env LD_PRELOAD="$MALLOC_SO" "$HARNESS" fullpath --plan "$PLANS/bench-20k.json" --runs "$RUNS" --device-process --no-records
fi

if want link; then
    step link-115200 "$HARNESS" link --plan "$PLANS/bench-5k.json" --baud 115200 --runs "$LINK_RUNS"
    step link-921600 "$HARNESS" link --plan "$PLANS/bench-5k.json" --baud 921600 --runs "$LINK_RUNS"
fi

if want underruns; then
    step underruns-idle "$HARNESS" underruns --plan "$PLANS/bench-20k.json" --time-scale 0.02 --runs 1
    step underruns-hog "$HARNESS" underruns --plan "$PLANS/bench-20k.json" --time-scale 0.02 --runs "$UNDERRUN_RUNS" --hog
    # The same with the simulator in its own process at nice -10 (a real device has its own CPU).
    step underruns-hog-devproc "$HARNESS" underruns --plan "$PLANS/bench-20k.json" --time-scale 0.02 --runs "$UNDERRUN_RUNS" --hog --device-process --device-nice -10
    # The same session at SCHED_FIFO 50 (host and simulator; the hog stays SCHED_OTHER): what a
    # real-time link thread would give. Needs root (or CAP_SYS_NICE).
    step underruns-hog-fifo chrt -f 50 "$HARNESS" underruns --plan "$PLANS/bench-20k.json" --time-scale 0.02 --runs "$UNDERRUN_RUNS" --hog
    # Issue 15's row: the simulator in its own process (a device has its own CPU), the session at
    # the default install's scheduling (SCHED_FIFO 50, which `smpctl run` takes when allowed);
    # ten runs, as the issue asks for 10 of 10.
    step underruns-hog-devproc-fifo chrt -f 50 "$HARNESS" underruns --plan "$PLANS/bench-20k.json" --time-scale 0.02 --runs "$ISSUE_HOG_RUNS" --hog --device-process
fi

if want cpu; then
    step cpu "$HARNESS" cpu --plan "$PLANS/bench-paced.json" --runs "$CPU_RUNS"
    # Beside it, the same sessions without records: what the records cost at that pace.
    step cpu-no-records "$HARNESS" cpu --plan "$PLANS/bench-paced.json" --runs "$CPU_RUNS" --no-records
    # And as a 1.3 host, whose every heartbeat the device answers: what protocol 1.4 saves.
    step cpu-protocol-1.3 "$HARNESS" cpu --plan "$PLANS/bench-paced.json" --runs "$CPU_RUNS" --protocol-minor 3
    # And with the interlock lines a clinic session watches (simulated, as `smpctl run --sim`
    # opens them): their chips' health check every third of the lease is not in the row above.
    step cpu-interlocks "$HARNESS" cpu --plan "$PLANS/bench-paced.json" --runs "$CPU_RUNS" --interlocks
    # The rows' anchor: the wake-ups a link at that pace cannot avoid, priced on this machine by
    # a loop in C that does nothing else (a write every third of the lease, two reads per dot).
    step wake-cost "$HARNESS" wake-cost --runs "$CPU_RUNS"
fi

if want estop; then
    step estop-idle "$HARNESS" estop --trials "$TRIALS" --cyclictest
    step estop-hog "$HARNESS" estop --trials "$TRIALS" --hog --cyclictest
    # At SCHED_FIFO 50, the default install's scheduling (the hog stays SCHED_OTHER): issue 15's rows.
    # --worst 3: the three slowest trials with their CLOCK_MONOTONIC times, to find them in a
    # trace (docs/performance.md, sixth stop: how an outlier was traced to the VM's scheduling).
    step estop-idle-fifo chrt -f 50 "$HARNESS" estop --trials "$TRIALS" --cyclictest --worst 3
    step estop-hog-fifo chrt -f 50 "$HARNESS" estop --trials "$TRIALS" --hog --cyclictest --worst 3
    # The edge's writer stands in for the GPIO interrupt's thread: at the process's policy and
    # kept to one CPU, as the kernel keeps an interrupt thread (docs/performance.md, ninth stop).
    # For comparison, idle, a writer free to move between CPUs (the harness before 2026-12-07).
    step estop-idle-fifo-edge-unpinned chrt -f 50 "$HARNESS" estop --trials "$TRIALS" --cyclictest --worst 3 --edge-unpinned
fi

if want planload; then
    step planload "$HARNESS" planload --plan "$PLANS/bench-200k.json" --runs "$LOAD_RUNS" ${SMPCTL:+--smpctl "$SMPCTL"}
    # Issue 16's measure: whole-process CPU, smpctl validate ÷ python3 json.load, paired.
    [[ -n "$SMPCTL" ]] && step validate-cpu "$ROOT/scripts/bench-validate-cpu.sh" "$PLANS/bench-200k.json" "$SMPCTL" "$LOAD_RUNS"
fi

if want rss; then
    # Issue 16's row measures smpctl as `make install` and the Debian package ship it: the Swift
    # runtime and Foundation linked statically, stripped (scripts/install.sh, build-deb.sh). The
    # dynamically linked build the other rows use maps the whole of libFoundation, ICU and
    # libswiftCore (~25 MiB of shared-library pages counted in its RSS); it is measured too. Its
    # own scratch path (.build-static: the first build takes ~12 minutes on 2 cores), so the
    # other rows' build is not relinked.
    say "rss: building smpctl as installed (static Swift runtime, stripped)"
    INSTALLED=""
    if ( cd "$BENCH" && "$SWIFT" build -c release --scratch-path "$BENCH/.build-static" --product smpctl \
            --static-swift-stdlib -Xlinker -z -Xlinker now >&2 ); then
        INSTALLED="$OUT/smpctl-installed"
        install -m 0755 -s "$BENCH/.build-static/release/smpctl" "$INSTALLED"
    else
        say "the installed form of smpctl did not build: the rss row measures the dynamic build only"
    fi
    rss_runs() {  # rss_runs LOG BINARY
        local log="$1" binary="$2"
        : > "$RAW/$log.log"
        local cmd=(/usr/bin/time -v "$binary" run "$PLANS/bench-200k.json" --sim --time-scale 0 --yes --json)
        echo "${cmd[*]} --db TMP/records.sqlite > /dev/null" > "$RAW/$log.cmd"
        for i in $(seq 1 "$RSS_RUNS"); do
            tmp="$(mktemp -d)"
            say "$log run $i: ${cmd[*]} --db $tmp/records.sqlite"
            status=0
            "${cmd[@]}" --db "$tmp/records.sqlite" > "$tmp/events.ndjson" 2> "$tmp/time.txt" || status=$?
            kib="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tmp/time.txt")"
            wall="$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$tmp/time.txt")"
            # Exit status 0 = every dot confirmed done (smpctl run --help).
            echo "run $i: exit $status, max RSS ${kib:-?} KiB, wall ${wall:-?}, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW/$log.log" >&2
            tail -n 2 "$tmp/events.ndjson" | cut -c1-400 >> "$RAW/$log.log"
            tail -n 25 "$tmp/time.txt" >> "$RAW/$log.log"
            rm -rf "$tmp"
        done
    }
    [[ -n "$INSTALLED" ]] && rss_runs rss "$INSTALLED"
    [[ -n "$SMPCTL" ]] && rss_runs rss-dynamic "$SMPCTL"
fi

python3 "$ROOT/scripts/bench-report.py" "$OUT"
say "results: $OUT/latest.txt and $OUT/latest.json"
