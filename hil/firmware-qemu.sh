#!/usr/bin/env bash
# hil/firmware-qemu.sh — the firmware image (make firmware, docs/firmware.md) on an emulated
# Cortex-M4 (qemu-system-arm -M mps2-an386) with its UART on a host pty, driven by the real smpctl
# and by fwclient (raw frames through the same codec). No x86 VM, no root. Run by `make test`.
#
#   hil/firmware-qemu.sh --image ELF --smpctl BIN --client BIN [--only a,b] [--keep]
#       the scenarios: session, estop, garbage, envelope, lease, resume (PASS/FAIL lines, a
#       summary, figures); exit 0 when nothing failed, 1 otherwise
#   hil/firmware-qemu.sh --boot-only --image ELF [--append "time-scale-percent=N"]
#       boots the image, prints one line `firmware pty: /dev/pts/N`, runs until stopped
#       (the firmware's diagnostic lines go to .build-firmware/qemu-trace.ndjson)
#
# qemu-system-arm missing: in CI (CI=true) that fails (exit 1); elsewhere it is said loudly and the
# scenarios are NOT run (exit 0). `make firmware` installs it (scripts/install-deps.sh).
set -uo pipefail

IMAGE="" SMPCTL="" CLIENT="" ONLY="" BOOT_ONLY=0 KEEP=0 APPEND="time-scale-percent=100"
REPO=$(cd "$(dirname "$0")/.." && pwd)
while (($#)); do
    case $1 in
        --image) IMAGE=$2; shift 2 ;;
        --smpctl) SMPCTL=$2; shift 2 ;;
        --client) CLIENT=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --append) APPEND=$2; shift 2 ;;
        --boot-only) BOOT_ONLY=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "firmware-qemu: unknown argument $1" >&2; exit 64 ;;
    esac
done
[[ -f $IMAGE ]] || { echo "firmware-qemu: no firmware image '$IMAGE' (make firmware)" >&2; exit 66; }

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    echo "firmware-qemu: *** qemu-system-arm is not installed: the firmware scenarios were NOT run ***" >&2
    echo "firmware-qemu: install it with scripts/install-deps.sh qemu-system-arm (make firmware does)" >&2
    [[ ${CI:-} == true ]] && { echo "firmware-qemu: CI=true: failing" >&2; exit 1; }
    exit 0
fi

QEMU_PID="" PTY="" QEMU_EXTRA=()
# boot TRACE APPEND: starts QEMU, sets QEMU_PID and PTY. The firmware's semihosting lines (QEMU
# writes them to its stderr, with its own messages) go to TRACE; QEMU's stdout (the pty line) to TRACE.qemu.
boot() {
    local trace=$1 append=$2 log=$1.qemu
    : > "$trace"
    qemu-system-arm -M mps2-an386 -nographic -monitor none -serial pty "${QEMU_EXTRA[@]}" \
        -semihosting-config enable=on,target=native -kernel "$IMAGE" -append "$append" \
        > "$log" 2> "$trace" &
    QEMU_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        PTY=$(grep -oh 'char device redirected to /dev/pts/[0-9]*' "$log" "$trace" 2>/dev/null | grep -o '/dev/pts/[0-9]*' | head -n1)
        [[ -n $PTY ]] && grep -q '"event":"boot"' "$trace" && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "firmware-qemu: QEMU did not boot the image (pty '${PTY}'):" >&2
    cat "$log" "$trace" >&2
    halt
    return 1
}
halt() {
    [[ -n $QEMU_PID ]] || return 0
    kill -TERM "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; QEMU_PID=""
}

if ((BOOT_ONLY)); then
    trace=$REPO/.build-firmware/qemu-trace.ndjson
    mkdir -p "$(dirname "$trace")"
    trap 'halt; exit 0' INT TERM
    boot "$trace" "$APPEND" || exit 1
    echo "firmware pty: $PTY"
    wait "$QEMU_PID"
    exit $?
fi

[[ -x $SMPCTL ]] || { echo "firmware-qemu: --smpctl BIN required" >&2; exit 64; }
[[ -x $CLIENT ]] || { echo "firmware-qemu: --client BIN required (make firmware builds .build-firmware/fwclient)" >&2; exit 64; }
PY=/usr/bin/python3
HELPER=$REPO/hil/hil_helper.py
PLAN=$REPO/Examples/hairline.json
PLAN_DOTS=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["dots"]))' "$PLAN")
SCALE=time-scale-percent=25   # physics at a quarter of real time: the whole plan in ~15 s
WORK=$(mktemp -d /tmp/smp-firmware.XXXXXX)
PASSED=() FAILED=() FIGURES=()
T0=$(date +%s.%N)
log() { printf '[%6.2f] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$*"; }
pass() { PASSED+=("$1"); log "PASS: $1"; }
fail() { FAILED+=("$1"); log "FAIL: $1"; }
figure() { FIGURES+=("$1"); log "FIGURE: $1"; }
show() { sed 's/^/    | /' "$@"; }
wants() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# The firmware's own ground truth: its `{"dot":…}` lines (the keys of the simulator's record).
dots_of() { grep '^{"dot":' "$1" > "$1.dots"; echo "$1.dots"; }
# json_field FILE KEY: the last value of KEY in the NDJSON lines of FILE that have it.
json_field() { $PY -c '
import json, sys
v = None
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try: o = json.loads(line)
        except ValueError: continue
        if sys.argv[2] in o: v = o[sys.argv[2]]
print("" if v is None else v)' "$1" "$2"; }
SMP=("$SMPCTL")
# The longest lease the protocol allows (250 ms): the host and QEMU share a machine that may be
# loaded (other builds), and a 100 ms lease then ends sessions held (issue 15) for reasons that
# are not the firmware's. No interlock lines: smpctl runs in developer mode.
printf '[envelope]\nlease_ms = 250\n' > "$WORK/machine.toml"
CONFIG=(--config "$WORK/machine.toml")
run_plan() { "${SMP[@]}" run "$PLAN" --device "$PTY" --operator fw-rig --yes --json --db "$WORK/records.db" "${CONFIG[@]}" "$@"; }
cleanup() { halt; ((KEEP)) || rm -rf "$WORK"; }
trap cleanup EXIT

# ---- scenarios ---------------------------------------------------------------------------------
scenario_session() {
    log "---- session: smpctl run $PLAN on the firmware, then its own done_count read back"
    local trace=$WORK/session.trace
    boot "$trace" "$SCALE" || { fail "session: boot"; return; }
    rm -f "$WORK/records.db"
    run_plan > "$WORK/session.ndjson" 2> "$WORK/session.err"
    local status=$?
    "${SMP[@]}" probe --device "$PTY" --json > "$WORK/probe.json" 2> "$WORK/probe.err"
    local done_count; done_count=$(json_field "$WORK/probe.json" done_count)
    halt
    if ((status == 0)) && [[ $done_count == "$PLAN_DOTS" ]] && $PY "$HELPER" record-check --plan "$PLAN" \
            --record "$(dots_of "$trace")" --exactly-once --account "$WORK/session.ndjson" > "$WORK/session.check" 2>&1; then
        pass "session: smpctl run exit 0; the firmware reports done_count $done_count over the protocol (plan: $PLAN_DOTS dots); its own record has every plan dot exactly once"
    else
        fail "session: smpctl run exit $status (want 0), firmware done_count '$done_count' (want $PLAN_DOTS), or its record is not every dot once"
        show "$WORK/session.check" 2>/dev/null; tail -n 3 "$WORK/session.ndjson" | cut -c1-300 | show; show "$WORK/session.err" "$WORK/probe.err"
    fi
    # RAM: the firmware's own counters, reported on every state change.
    local static heap stack allocations
    static=$(json_field "$trace" static_ram) heap=$(json_field "$trace" heap_high_water)
    stack=$(json_field "$trace" stack_high_water) allocations=$(json_field "$trace" allocations)
    if [[ -n $static && -n $heap ]] && ((static + heap <= 16384)); then
        pass "RAM budget: static $static + peak heap $heap = $((static + heap)) bytes <= 16384"
    else
        fail "RAM budget: static '$static' + peak heap '$heap' bytes over 16384 (or not reported)"
    fi
    # No allocation per frame: the count since boot must not grow with the session.
    if [[ -n $allocations ]] && ((allocations < PLAN_DOTS)); then
        pass "no allocation per frame: $allocations allocations from boot through $PLAN_DOTS dots"
    else
        fail "allocation per frame: '$allocations' allocations from boot through $PLAN_DOTS dots (want fewer than one per dot)"
    fi
    figure "RAM after $PLAN_DOTS dots: static $static B, heap high water $heap B, stack high water $stack B (total $((static + heap + stack)) B of the 16 KB budget); $allocations allocations since boot"
}

scenario_estop() {
    log "---- estop: ESTOP while dots run (fwclient)"
    local trace=$WORK/estop.trace
    # -icount shift=5: every instruction advances the emulated clock 32 ns, so the 25 MHz SysTick
    # counts instructions (× 0.8) instead of following the host's clock: a reproducible figure.
    QEMU_EXTRA=(-icount shift=5)
    boot "$trace" "$SCALE" || { QEMU_EXTRA=(); fail "estop: boot"; return; }
    QEMU_EXTRA=()
    "$CLIENT" estop "$PTY" > "$WORK/estop.json" 2>&1
    local status=$?
    sleep 0.2
    halt
    local cycles; cycles=$(json_field "$trace" rx_to_power_off_cycles)
    local power; power=$(grep '"state":"estop"' "$trace" | grep -o '"needle_power":[01]' | head -n1)
    if ((status == 0)) && [[ $power == '"needle_power":0' ]]; then
        pass "estop: STATUS estop/host_estop, needle retracted, no DOT_DONE after it; needle power output off ($(cat "$WORK/estop.json" | grep -o '"current_dot_id":[0-9]*'))"
    else
        fail "estop: fwclient exit $status, needle power '$power'"; show "$WORK/estop.json" "$trace"
    fi
    [[ -n $cycles ]] && figure "ESTOP frame's last byte into the UART → needle power output off: $cycles SysTick cycles under -icount shift=5 = $(( cycles * 40 / 32 )) instructions executed ($(awk -v c="$cycles" 'BEGIN { printf "%.0f", c * 40 / 32 / 25 }') µs on a 25 MHz Cortex-M4 at one instruction per cycle)"
}

scenario_garbage() {
    log "---- garbage: 4 KB of random bytes on the line"
    local trace=$WORK/garbage.trace
    boot "$trace" "$SCALE" || { fail "garbage: boot"; return; }
    "$CLIENT" garbage "$PTY" > "$WORK/garbage.json" 2>&1
    local status=$?
    "${SMP[@]}" probe --device "$PTY" --json > "$WORK/garbage-probe.json" 2>&1
    local probe=$?
    halt
    if ((status == 0 && probe == 0)) && ! grep -q '"event":"fault"' "$trace"; then
        pass "garbage: NAK bad_frame for the broken blocks, no crash, a clean HELLO and smpctl probe answered after ($(grep -o '"nak_bad_frame":[0-9]*' "$WORK/garbage.json"))"
    else
        fail "garbage: fwclient exit $status, smpctl probe exit $probe"; show "$WORK/garbage.json" "$WORK/garbage-probe.json" "$trace"
    fi
}

scenario_envelope() {
    log "---- envelope: a dot twice the maximum depth, sent raw (no host checks)"
    local trace=$WORK/envelope.trace
    boot "$trace" "$SCALE" || { fail "envelope: boot"; return; }
    "$CLIENT" envelope "$PTY" > "$WORK/envelope.json" 2>&1
    local status=$?
    sleep 0.2
    halt
    if ((status == 0)) && [[ ! -s $(dots_of "$trace") ]] && grep -q '"event":"refused","dot":9001' "$trace"; then
        pass "envelope: the firmware alone REFUSED dot 9001 ($(grep -o '"refused_code":"[^"]*"' "$WORK/envelope.json")), latched fault dot_out_of_limits, injected nothing"
    else
        fail "envelope: fwclient exit $status or the firmware injected something"; show "$WORK/envelope.json" "$trace"
    fi
}

# wait_dots TRACE N SECONDS: until the firmware has recorded N dots.
wait_dots() {
    local deadline=$(( $(now_ms) + $3 * 1000 ))
    until (( $(grep -c '^{"dot":' "$1") >= $2 )); do
        (( $(now_ms) < deadline )) || return 1
        sleep 0.02
    done
}

scenario_lease() {
    log "---- lease: smpctl stopped (SIGSTOP) mid-session; the firmware must hold on its own"
    local trace=$WORK/lease.trace
    boot "$trace" "$SCALE" || { fail "lease: boot"; return; }
    rm -f "$WORK/records.db"
    "${SMP[@]}" run "$PLAN" --device "$PTY" --operator fw-rig --yes --json --db "$WORK/records.db" "${CONFIG[@]}" \
        > "$WORK/lease.ndjson" 2> "$WORK/lease.err" &
    local host=$!  # smpctl itself (not a subshell): the signals below must reach it
    if ! wait_dots "$trace" 30 60; then
        fail "lease: the session did not reach 30 dots"; kill "$host"; wait "$host"; halt; return
    fi
    kill -STOP "$host"
    local stopped; stopped=$(now_ms)
    local held=""
    while (( $(now_ms) - stopped < 5000 )); do
        grep -q '"fault":"lease_expired"' "$trace" && { held=$(now_ms); break; }
        sleep 0.005
    done
    local dots_at_hold; dots_at_hold=$(grep -c '^{"dot":' "$trace")
    sleep 0.5
    local dots_later; dots_later=$(grep -c '^{"dot":' "$trace")
    kill -CONT "$host"; wait "$host"; local status=$?
    halt
    local late; late=$(json_field "$trace" deadline_to_hold_us)
    local power; power=$(grep '"fault":"lease_expired"' "$trace" | grep -o '"needle_power":[01]' | head -n1)
    # Timed by the firmware's own clock: the hold within 5 ms of the lease deadline it computed
    # (1 ms tick). What the host sees also includes the frames still in the pty when it stopped
    # and QEMU's scheduling on a loaded machine: reported, only bounded loosely (5 s).
    if [[ -n $held ]] && ((dots_later == dots_at_hold)) && [[ $power == '"needle_power":0' ]] \
            && [[ -n $late ]] && ((late <= 5000)); then
        pass "lease: host stopped → the firmware held (lease_expired) ${late} µs after its lease deadline, needle power off, no dot after it; seen $((held - stopped)) ms after SIGSTOP (lease 250 ms); smpctl exit $status after SIGCONT"
    else
        fail "lease: held '${held:+$((held - stopped)) ms}' after SIGSTOP, '$late' µs after the deadline, dots $dots_at_hold → $dots_later, power '$power'"; tail -n 5 "$trace" | show
    fi
    [[ -n $late ]] && figure "lease expiry → hold (firmware clock, the deadline the main loop was woken for → the state change made): $late µs; host SIGSTOP → hold line seen: $((held - stopped)) ms"
    if $PY "$HELPER" record-check --plan "$PLAN" --record "$(dots_of "$trace")" --account "$WORK/lease.ndjson" > "$WORK/lease.check" 2>&1; then
        pass "lease: the session's account matches the firmware's record, no dot twice ($(grep -o 'account: [^,]*, done [0-9]*' "$WORK/lease.check"))"
    else
        fail "lease: account or record problem"; show "$WORK/lease.check"
    fi
}

scenario_resume() {
    log "---- resume: smpctl killed (SIGKILL) mid-session, then smpctl resume on the same firmware"
    local trace=$WORK/resume.trace
    boot "$trace" "$SCALE" || { fail "resume: boot"; return; }
    rm -f "$WORK/records.db"
    "${SMP[@]}" run "$PLAN" --device "$PTY" --operator fw-rig --yes --json --db "$WORK/records.db" "${CONFIG[@]}" \
        > "$WORK/killed.ndjson" 2> "$WORK/killed.err" &
    local host=$!
    if ! wait_dots "$trace" 40 60; then
        fail "resume: the session did not reach 40 dots"; kill "$host"; wait "$host"; halt; return
    fi
    kill -KILL "$host"; wait "$host" 2>/dev/null
    local id; id=$($PY -c '
import json, sys
ids = [json.loads(l).get("session_id") for l in open(sys.argv[1]) if l.strip().startswith("{")]
ids = [i for i in ids if i is not None]
print(ids[-1] if ids else "")' "$WORK/killed.ndjson")
    [[ -n $id ]] || id=1
    sleep 0.3
    "${SMP[@]}" resume "$id" --device "$PTY" --operator fw-rig --yes --json --db "$WORK/records.db" "${CONFIG[@]}" \
        > "$WORK/resume.ndjson" 2> "$WORK/resume.err"
    local status=$?
    if ((status == 64)); then
        log "resume $id: exit 64 (a decision on in-flight dots is needed); again with --ambiguous skip"
        "${SMP[@]}" resume "$id" --device "$PTY" --operator fw-rig --yes --json --db "$WORK/records.db" "${CONFIG[@]}" --ambiguous skip \
            > "$WORK/resume.ndjson" 2> "$WORK/resume.err"
        status=$?
    fi
    "${SMP[@]}" probe --device "$PTY" --json > "$WORK/resume-probe.json" 2>&1
    local done_count; done_count=$(json_field "$WORK/resume-probe.json" done_count)
    halt
    if ((status == 0)) && [[ $done_count == "$PLAN_DOTS" ]] && $PY "$HELPER" record-check --plan "$PLAN" \
            --record "$(dots_of "$trace")" --exactly-once --cumulative --account "$WORK/resume.ndjson" > "$WORK/resume.check" 2>&1; then
        pass "resume: after SIGKILL at >= 40 dots, smpctl resume $id exit 0; firmware done_count $done_count; every plan dot exactly once in the firmware's record"
    else
        fail "resume: smpctl resume exit $status, firmware done_count '$done_count' (want $PLAN_DOTS), or the record is not every dot once"
        show "$WORK/resume.check" 2>/dev/null; tail -n 3 "$WORK/resume.ndjson" | cut -c1-300 | show; show "$WORK/resume.err"
    fi
}

log "firmware image $IMAGE on $(qemu-system-arm --version | head -n1); smpctl $SMPCTL; work $WORK"
for name in session estop garbage envelope lease resume; do
    wants "$name" && "scenario_$name"
done

echo
echo "==== summary (hil/firmware-qemu.sh: the firmware on qemu-system-arm mps2-an386)"
for item in "${PASSED[@]}"; do echo "PASS     $item"; done
for item in "${FAILED[@]}"; do echo "FAIL     $item"; done
if ((${#FIGURES[@]})); then
    echo "---- figures (measured under QEMU TCG, not asserted)"
    for item in "${FIGURES[@]}"; do echo "  $item"; done
fi
echo "${#PASSED[@]} passed, ${#FAILED[@]} failed"
((${#FAILED[@]} == 0))
