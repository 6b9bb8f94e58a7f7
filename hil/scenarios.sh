#!/usr/bin/env bash
# hil/scenarios.sh — the hardware-in-the-loop scenarios (docs/hil.md). Started by hil/run.sh:
#   HIL_MODE=vm      inside the QEMU VM, as root, chrooted into the host's root (read-only) with
#                    tmpfs /tmp and /run; creates the USB gadget and the gpio-sim chip itself.
#   HIL_MODE=device  on this computer against a real applicator at HIL_DEVICE (SMP_HIL_DEVICE).
# Other inputs (from run.sh): HIL_SMPCTL (the binary under test), HIL_REPO, HIL_SHARE (results;
# writable), HIL_RULES (the udev rule to install), HIL_GPIO_KO (the gpio-sim module),
# HIL_KEEP_GOING (1: a failed setup step does not stop the run).
# Prints PASS/FAIL/PENDING lines, then "==== summary" with the figures. Exit 0 when nothing failed.
set -uo pipefail
# udevadm settle/trigger/monitor do nothing in a chroot ("Running in chroot, ignoring request").
export SYSTEMD_IGNORE_CHROOT=1

MODE=${HIL_MODE:-vm}
SMPCTL=${HIL_SMPCTL:?HIL_SMPCTL: the smpctl binary}
REPO=${HIL_REPO:?HIL_REPO: the repository}
KEEP_GOING=${HIL_KEEP_GOING:-0}
ONLY=${HIL_ONLY:-}   # comma-separated scenario names (run.sh --only); empty: all
PY=/usr/bin/python3
HELPER=$REPO/hil/hil_helper.py
PLAN=$REPO/Examples/hairline.json
SERIAL=HIL0001
GADGET=/sys/kernel/config/usb_gadget/smp
LINK=/dev/smp/applicator-$SERIAL
SMP_GID=4350 TECH_UID=4351 GUEST_UID=4352   # created in the VM (tmpfs copies of /etc/passwd, /etc/group)
if [[ $MODE == vm ]]; then
    WORK=${HIL_SHARE:-/tmp}/work
else
    WORK=$(mktemp -d /tmp/smp-hil.XXXXXX)
fi
mkdir -p "$WORK"
chmod 0777 "$WORK"

PASSED=() FAILED=() PENDING=() FIGURES=()
T0=$(date +%s.%N)
log() { printf '[%6.2f] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$*"; }
pass() { PASSED+=("$1"); log "PASS: $1"; }
fail() { FAILED+=("$1"); log "FAIL: $1"; }
pending() { PENDING+=("$1"); log "PENDING: $1"; }
figure() { FIGURES+=("$1"); log "FIGURE: $1"; }
show() { sed 's/^/    | /' "$@"; }
# wants NAME: whether scenario NAME runs (every one unless run.sh --only names some).
wants() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }
wants_gpio() { [[ -z $ONLY || ",$ONLY," == *",gpio"* ]]; }

# wait_for SECONDS COMMAND… : polls every 50 ms until COMMAND succeeds.
wait_for() {
    local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
    until "$@" 2>/dev/null; do
        (( $(date +%s%N) < deadline )) || return 1
        sleep 0.05
    done
}

# Whether this smpctl has a subcommand (`smpctl NAME --help` would print the top help and exit 0).
has_subcommand() { "$SMPCTL" --help 2>/dev/null | sed -n '/^SUBCOMMANDS:/,$p' | grep -qE "^  +$1( |$)"; }
has_option() { "$SMPCTL" "$1" --help 2>&1 | grep -q -- "$2"; }

# as_user tech|guest COMMAND… : runs COMMAND unprivileged (in group smp, or in no extra group).
as_user() {
    local who=$1; shift
    local uid groups
    if [[ $who == tech ]]; then uid=$TECH_UID groups=(--groups "$SMP_GID"); else uid=$GUEST_UID groups=(--clear-groups); fi
    mkdir -p "/tmp/home-$uid" && chown "$uid:$uid" "/tmp/home-$uid"
    setpriv --reuid="$uid" --regid="$uid" "${groups[@]}" --reset-env \
        env HOME="/tmp/home-$uid" USER="smp$who" LOGNAME="smp$who" "$@"
}

SIM_PID=""
start_sim() {  # start_sim RECORD TIME_SCALE
    : > "$WORK/sim.out"
    "$SMPCTL" sim --port /dev/ttyGS0 --record "$1" --time-scale "$2" --verbose \
        > "$WORK/sim.out" 2>> "$WORK/sim.log" &
    SIM_PID=$!
    if ! wait_for 20 grep -q . "$WORK/sim.out"; then
        fail "smpctl sim --port /dev/ttyGS0 did not start"; show "$WORK/sim.log"; return 1
    fi
}
stop_sim() {
    [[ -n $SIM_PID ]] || return 0
    kill -TERM "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null; SIM_PID=""
}

finish() {
    stop_sim
    if ((${#FAILED[@]})) && [[ -s $WORK/sim.log ]]; then
        echo "---- the simulator's log ($WORK/sim.log), last lines"; tail -n 20 "$WORK/sim.log" | show
    fi
    echo
    echo "==== summary (hil/scenarios.sh, mode $MODE, $(uname -r))"
    for item in "${PASSED[@]}"; do echo "PASS     $item"; done
    for item in "${PENDING[@]}"; do echo "PENDING  $item"; done
    for item in "${FAILED[@]}"; do echo "FAIL     $item"; done
    if ((${#FIGURES[@]})); then
        echo "---- figures (measured, not asserted; under QEMU TCG emulation, not the real machine's timing)"
        for item in "${FIGURES[@]}"; do echo "  $item"; done
    fi
    echo "${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#PENDING[@]} pending"
    ((${#FAILED[@]} == 0))
}

# ============================================================================================
# Setup (VM): users, udev, the USB gadget
# ============================================================================================
setup_users() {
    # /etc is the host's, read-only: bind-mount writable copies of passwd and group over it.
    local etc=/run/hil-etc
    mkdir -p "$etc"
    cp /etc/passwd "$etc/passwd"; cp /etc/group "$etc/group"
    if getent group "$SMP_GID" >/dev/null || getent passwd "$TECH_UID" >/dev/null || getent passwd "$GUEST_UID" >/dev/null; then
        fail "setup: ids $SMP_GID–$GUEST_UID are taken on this host; change SMP_GID/TECH_UID/GUEST_UID in hil/scenarios.sh"
        return 1
    fi
    if getent group smp >/dev/null; then
        SMP_GID=$(getent group smp | cut -d: -f3)  # the host already has a group smp: use it
    else
        echo "smp:x:$SMP_GID:smptech" >> "$etc/group"
    fi
    echo "smptech:x:$TECH_UID:" >> "$etc/group"
    echo "smpguest:x:$GUEST_UID:" >> "$etc/group"
    echo "smptech:x:$TECH_UID:$TECH_UID:SMP technician (HIL):/tmp/home-$TECH_UID:/bin/sh" >> "$etc/passwd"
    echo "smpguest:x:$GUEST_UID:$GUEST_UID:not in group smp (HIL):/tmp/home-$GUEST_UID:/bin/sh" >> "$etc/passwd"
    mount --bind "$etc/passwd" /etc/passwd && mount --bind "$etc/group" /etc/group || {
        fail "setup: cannot bind-mount writable /etc/passwd and /etc/group"; return 1; }
    log "users: smptech ($TECH_UID, group smp $SMP_GID), smpguest ($GUEST_UID, not in smp)"
}

setup_udev() {
    mkdir -p /run/udev/rules.d
    cp "$HIL_RULES" /run/udev/rules.d/70-smp-applicator.rules
    log "udev rule: $HIL_RULES → /run/udev/rules.d/70-smp-applicator.rules"
    /lib/systemd/systemd-udevd --daemon --resolve-names=early 2>> "$WORK/udevd.log" || {
        fail "setup: systemd-udevd did not start"; return 1; }
    udevadm trigger --action=add >/dev/null 2>&1
    udevadm settle --timeout=30
}

plug() { echo "$(ls /sys/class/udc | head -n1)" > "$GADGET/UDC"; }
unplug() { echo "" > "$GADGET/UDC"; }

setup_gadget() {
    mkdir -p "$GADGET" || { fail "setup: no configfs usb_gadget"; return 1; }
    echo 0x1209 > "$GADGET/idVendor"    # pid.codes, as udev/70-smp-applicator.rules expects
    echo 0x5350 > "$GADGET/idProduct"
    echo 0x0200 > "$GADGET/bcdUSB"
    mkdir -p "$GADGET/strings/0x409" "$GADGET/configs/c.1/strings/0x409" "$GADGET/functions/acm.usb0"
    echo "$SERIAL" > "$GADGET/strings/0x409/serialnumber"
    echo "smpctl-hil" > "$GADGET/strings/0x409/manufacturer"
    echo "SMP applicator (emulated)" > "$GADGET/strings/0x409/product"
    echo "ACM" > "$GADGET/configs/c.1/strings/0x409/configuration"
    ln -s "$GADGET/functions/acm.usb0" "$GADGET/configs/c.1/"
    plug
    if ! wait_for 15 test -c /dev/ttyACM0 -a -c /dev/ttyGS0; then
        fail "setup: the USB gadget did not give /dev/ttyACM0 and /dev/ttyGS0"; dmesg | tail -n 20 | show; return 1
    fi
    udevadm settle --timeout=30
    log "gadget: USB 1209:5350 serial $SERIAL on $(cat "$GADGET/UDC"): /dev/ttyACM0 (host) ↔ /dev/ttyGS0 (device)"
}

check_rule() {
    local info; info=$(udevadm info --query=property --name=/dev/ttyACM0 2>&1)
    if ! wait_for 5 test -e "$LINK"; then
        fail "the udev rule ($HIL_RULES) did not create $LINK for the applicator on /dev/ttyACM0 (USB $(
            grep -oP '^ID_VENDOR_ID=\K.*' <<<"$info"):$(grep -oP '^ID_MODEL_ID=\K.*' <<<"$info") serial $(
            grep -oP '^ID_SERIAL_SHORT=\K.*' <<<"$info")): check its ATTRS{idVendor}/ATTRS{idProduct} against the device"
        log "udevadm info /dev/ttyACM0:"; show <<<"$info"
        log "rule file:"; grep -v '^#' "$HIL_RULES" | grep . | show
        return 1
    fi
    local target owner
    target=$(readlink -f "$LINK"); owner=$(stat -c '%G %a' "$target")
    if [[ $target == /dev/ttyACM0 && $owner == "smp 660" ]] && grep -q '^ID_MM_DEVICE_IGNORE=1' <<<"$info"; then
        pass "udev rule: $LINK → $target, group smp, mode 0660, ID_MM_DEVICE_IGNORE=1"
    else
        fail "udev rule: $LINK → $target with group/mode '$owner' (want /dev/ttyACM0, 'smp 660', ID_MM_DEVICE_IGNORE=1)"
        show <<<"$info"
        return 1
    fi
}

check_devices() {
    if ! has_subcommand devices; then
        pending "smpctl devices --json (not in this smpctl yet): udevadm info checked instead"
        udevadm info --query=property --name=/dev/ttyACM0 | grep -E '^ID_(VENDOR_ID|MODEL_ID|SERIAL_SHORT)=' | show
        return 0
    fi
    local out; out=$(as_user tech "$SMPCTL" devices --json 2> "$WORK/devices.err"); local status=$?
    if $PY -c '
import json, sys
link, serial, text = sys.argv[1:4]
ports = json.loads(text)
found = [p for p in ports if p.get("applicator") and link in json.dumps(p) and serial in json.dumps(p)]
sys.exit(0 if found else 1)' "$LINK" "$SERIAL" "$out" 2>/dev/null
    then
        pass "smpctl devices --json finds the applicator (serial $SERIAL, $LINK), exit $status"
    else
        fail "smpctl devices --json does not list the applicator $SERIAL at $LINK (exit $status)"; show <<<"$out"; show "$WORK/devices.err"
    fi
}

# ============================================================================================
# Scenarios
# ============================================================================================
scenario_session() {
    log "---- scenario: a whole session through USB, udev and the gadget, as a user in group smp"
    local record=$WORK/record-session.ndjson
    start_sim "$record" 0.1 || return 1
    as_user tech "$SMPCTL" run "$PLAN" --device "$LINK" --operator hil-rig --yes --json \
        > "$WORK/session.ndjson" 2> "$WORK/session.err"
    local status=$?
    stop_sim
    if ((status != 0)); then
        fail "smpctl run $PLAN --device $LINK --yes as smptech: exit $status (want 0)"
        tail -n 5 "$WORK/session.ndjson" | show; show "$WORK/session.err"; return 1
    fi
    if $PY "$HELPER" record-check --plan "$PLAN" --record "$record" --exactly-once \
            --account "$WORK/session.ndjson" > "$WORK/session.check" 2>&1; then
        pass "session as smptech (group smp): exit 0, every plan dot exactly once in the simulator's record ($(
            grep -o '[0-9]* distinct dots' "$WORK/session.check"))"
    else
        fail "session: the record does not match the plan"; show "$WORK/session.check"; return 1
    fi
}

scenario_permission() {
    log "---- scenario: the same user outside group smp is refused"
    local out status
    out=$(as_user guest "$SMPCTL" run "$PLAN" --device "$LINK" --operator hil-rig --yes --json 2>&1 >/dev/null); status=$?
    if ((status == 77)) && grep -q '70-smp-applicator.rules' <<<"$out" && grep -q 'group `smp`' <<<"$out"; then
        pass "smpguest (not in smp): exit 77, message names the rule 70-smp-applicator.rules and the group smp"
    else
        fail "smpguest (not in smp): exit $status (want 77 and a message naming 70-smp-applicator.rules and group smp)"
        show <<<"$out"; return 1
    fi
}

scenario_unplug() {
    log "---- scenario: unplug mid-session, replug"
    local record=$WORK/record-unplug.ndjson summary=$WORK/unplug.json
    start_sim "$record" 0.25 || return 1
    dmesg -C 2>/dev/null
    $PY "$HELPER" session --events "$WORK/unplug.ndjson" --stderr "$WORK/unplug.err" --summary "$summary" \
        --unplug-after 40 --udc "$GADGET/UDC" -- \
        setpriv --reuid="$TECH_UID" --regid="$TECH_UID" --groups "$SMP_GID" --reset-env \
        env HOME="/tmp/home-$TECH_UID" USER=smptech "$SMPCTL" run "$PLAN" --device "$LINK" --operator hil-rig --yes --json
    local status; status=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["exit_code"])' "$summary")
    dmesg > "$WORK/unplug.dmesg"
    if ! $PY -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["unplug"] else 1)' "$summary"; then
        fail "unplug: the session ended (exit $status) before 40 dots were done, so it was never unplugged"
        grep -v '"progress"' "$WORK/unplug.ndjson" | tail -n 5 | show; show "$WORK/unplug.err"
        plug 2>/dev/null; stop_sim; return 1
    fi
    if ((status == 69)) && $PY "$HELPER" record-check --plan "$PLAN" --record "$record" \
            --account "$WORK/unplug.ndjson" > "$WORK/unplug.check" 2>&1; then
        pass "unplug mid-session: smpctl exit 69, the account adds up and matches the record ($(
            grep -o 'done [0-9]*, in doubt [0-9]*, cut short [0-9]*, not started [0-9]*' "$WORK/unplug.check" | head -n1))"
    else
        fail "unplug mid-session: smpctl exit $status (want 69) or the account does not match the record"
        show "$WORK/unplug.check" 2>/dev/null; tail -n 5 "$WORK/unplug.ndjson" | show; show "$WORK/unplug.err"
    fi
    local figures
    if figures=$($PY "$HELPER" latency --summary "$summary" --dmesg "$WORK/unplug.dmesg"); then
        echo "$figures" > "$WORK/unplug-latency.json"
        figure "$($PY - "$WORK/unplug-latency.json" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))
parts = [f"unplug detection: first link-loss event ({f.get('first_event')}) "
         f"{f.get('unplug_to_first_event_ms', float('nan')):.1f} ms after the UDC write"]
if "kernel_usb_disconnect_to_first_event_ms" in f:
    parts.append(f"{f['kernel_usb_disconnect_to_first_event_ms']:.1f} ms after the kernel's 'USB disconnect' "
                 f"(dmesg; which came {f['kernel_usb_disconnect_after_unplug_ms']:.1f} ms after the write)")
if "unplug_to_finished_ms" in f:
    parts.append(f"`finished` event {f['unplug_to_finished_ms']:.1f} ms after the write")
verdict = "within" if f.get("unplug_to_first_event_ms", 1e9) <= 100 else "NOT within"
print("; ".join(parts) + f" [{verdict} 100 ms]")
EOF
)"
    else
        fail "unplug: no link-loss event after the unplug to time"
    fi

    log "replug"
    plug
    if wait_for 15 test -e "$LINK" && udevadm settle --timeout=30; then
        pass "replug: $LINK is back ($(readlink -f "$LINK"))"
    else
        fail "replug: $LINK did not come back"; stop_sim; return 1
    fi
    if $PY "$HELPER" record-check --plan "$PLAN" --record "$record" > "$WORK/replug.check" 2>&1; then
        pass "after replug: no dot twice in the record so far ($(grep -o '[0-9]* distinct dots' "$WORK/replug.check"))"
    else
        fail "after replug: the record has a problem"; show "$WORK/replug.check"
    fi
    wait_for 5 grep -q 'link reconnected' "$WORK/sim.log" \
        && log "the simulator reopened /dev/ttyGS0 after the hang-up (sim.log: 'link reconnected')"

    if has_subcommand resume; then
        local id; id=$($PY -c '
import json, sys
ids = [json.loads(l).get("session_id") for l in open(sys.argv[1]) if l.strip().startswith("{")]
ids = [i for i in ids if i is not None]
print(ids[-1] if ids else "")' "$WORK/unplug.ndjson")
        if [[ -z $id ]]; then
            fail "resume: no session_id in the events of the unplugged session"; stop_sim; return 1
        fi
        as_user tech "$SMPCTL" resume "$id" --device "$LINK" --operator hil-rig --yes --json > "$WORK/resume.ndjson" 2> "$WORK/resume.err"
        status=$?
        if ((status == 64)); then
            # smpctl could not settle every in-flight dot from the device's status. Skipping them
            # is the safe choice (a dot is never injected twice); the record check below then
            # shows whether any dot was left out.
            cp "$WORK/resume.ndjson" "$WORK/resume-1.ndjson"; cp "$WORK/resume.err" "$WORK/resume-1.err"
            log "resume $id: exit 64, a decision is needed; smpctl said:"
            grep -v '"progress"' "$WORK/resume-1.ndjson" | tail -n 4 | cut -c1-400 | show; tail -n 6 "$WORK/resume-1.err" | show
            log "resume $id again with --ambiguous skip"
            as_user tech "$SMPCTL" resume "$id" --device "$LINK" --operator hil-rig --yes --json --ambiguous skip \
                > "$WORK/resume.ndjson" 2> "$WORK/resume.err"
            status=$?
        fi
        if ((status == 0)) && $PY "$HELPER" record-check --plan "$PLAN" --record "$record" --exactly-once \
                --cumulative --account "$WORK/resume.ndjson" > "$WORK/resume.check" 2>&1; then
            pass "smpctl resume $id after replug: exit 0, every plan dot exactly once overall in the record"
        else
            fail "smpctl resume $id after replug: exit $status, or the record is not every dot exactly once"
            show "$WORK/resume.check" 2>/dev/null; tail -n 5 "$WORK/resume.ndjson" | show; show "$WORK/resume.err"
        fi
    else
        # TODO(resume): enable when `smpctl resume ID --device …` lands (the lead is building it);
        # this branch then goes away: resume the unplugged session, check every dot exactly once.
        pending "TODO resume: \`smpctl resume\` not in this smpctl; the unplugged session is not finished and 'every dot exactly once overall' is not checked"
        if has_subcommand probe; then
            if as_user tech "$SMPCTL" probe --device "$LINK" --json > "$WORK/probe.json" 2>&1; then
                pass "after replug the simulator serves a new host: smpctl probe --device $LINK answers"
            else
                fail "after replug: smpctl probe --device $LINK failed"; show "$WORK/probe.json"
            fi
        fi
    fi
    stop_sim
}

GPIO_CHIP=""
scenario_gpio() {
    log "---- scenario: GPIO interlock lines on gpio-sim"
    if [[ ! -f ${HIL_GPIO_KO:-} ]]; then fail "gpio: no gpio-sim module (${HIL_GPIO_KO:-unset})"; return 1; fi
    insmod "$HIL_GPIO_KO" || { fail "gpio: insmod $HIL_GPIO_KO failed"; dmesg | tail -n 5 | show; return 1; }
    local sim=/sys/kernel/config/gpio-sim/smp-interlocks
    mkdir -p "$sim/bank0" || { fail "gpio: no /sys/kernel/config/gpio-sim"; return 1; }
    echo 4 > "$sim/bank0/num_lines"
    echo "smp-interlocks" > "$sim/bank0/label"
    local offset=0 role
    for role in estop pedal contact needle-power; do
        mkdir -p "$sim/bank0/line$offset"; echo "$role" > "$sim/bank0/line$offset/name"; offset=$((offset + 1))
    done
    echo 1 > "$sim/live"
    local device chip
    device=$(cat "$sim/dev_name"); chip=$(cat "$sim/bank0/chip_name")
    GPIO_CHIP=$chip
    if ! wait_for 10 test -c "/dev/$chip"; then fail "gpio: /dev/$chip did not appear"; return 1; fi
    udevadm settle --timeout=30
    local lines; lines=$(gpioinfo "$chip" 2>&1)
    if grep -q '"estop"' <<<"$lines" && grep -q '"pedal"' <<<"$lines" && grep -q '"contact"' <<<"$lines"; then
        pass "gpio: /dev/$chip (gpio-sim, label smp-interlocks) with lines estop, pedal, contact; udev: $(stat -c 'group %G mode %a' "/dev/$chip")"
    else
        fail "gpio: /dev/$chip lines are not named estop, pedal, contact"; show <<<"$lines"; return 1
    fi
    # Edges from sysfs `pull`, seen through libgpiod by a user in group smp (the rule's GPIO part).
    local pull=/sys/devices/platform/$device/$chip/sim_gpio0/pull
    if $PY "$HELPER" gpio-edges --pull "$pull" --chip "$chip" --line 0 --cycles 5 -- \
            setpriv --reuid="$TECH_UID" --regid="$TECH_UID" --groups "$SMP_GID" --reset-env \
            stdbuf -oL gpiomon --num-events=10 --format='%e %s %n' "$chip" 0 \
            > "$WORK/gpio-edges.json" 2> "$WORK/gpio-edges.err"; then
        pass "gpio: libgpiod (gpiomon as smptech) sees every rising and falling edge of 'estop' driven from sysfs pull"
        figure "$($PY - "$WORK/gpio-edges.json" <<'EOF'
import json, sys
r = [e for e in json.load(open(sys.argv[1])) if e.get("seen")]
u = sorted(e["write_to_userspace_ms"] for e in r)
k = sorted(e["write_to_kernel_timestamp_ms"] for e in r if "write_to_kernel_timestamp_ms" in e)
text = f"GPIO edge (sysfs pull write → gpiomon prints it): median {u[len(u)//2]:.1f} ms, max {u[-1]:.1f} ms over {len(u)} edges"
if k:
    text += f"; write → kernel event timestamp: median {k[len(k)//2]:.2f} ms"
print(text)
EOF
)"
    else
        fail "gpio: gpiomon did not see the edges: $(tail -n 1 "$WORK/gpio-edges.err")"
        show "$WORK/gpio-edges.err" "$WORK/gpio-edges.json"; return 1
    fi
    GPIO_DEVICE=$device
    if ! wants gpio-estop; then
        :
    elif ((GPIO_SESSION_ENABLED)); then
        scenario_gpio_session "$device" "$chip"
    elif has_option run --config; then
        pending "TODO gpio-session: \`smpctl run --config\` exists now: set GPIO_SESSION_ENABLED=1 in hil/scenarios.sh to run the e-stop-mid-session scenario (written against docs/machine-config.md, never run yet)"
    else
        pending "TODO gpio-session: libgpiod interlocks + --config TOML are not wired into \`smpctl run\` yet: the chip, its line names and edges are checked; no session-level e-stop, no e-stop latency figure"
    fi
}

# TODO(gpio-session), for the lead: set to 1 once `smpctl run --config PATH` watches the interlock
# lines. scenario_gpio_session is written against docs/machine-config.md but has NEVER RUN: expect
# to adjust the TOML, the expected exit status and the event names when enabling it.
GPIO_SESSION_ENABLED=1

# A session with interlocks on the gpio-sim chip; the e-stop line goes active mid-session: the
# session must stop (latched e-stop) and the record must hold no dot twice; the time from the
# edge (sysfs pull write) to smpctl's first reaction is a figure.
scenario_gpio_session() {
    local device=$1 chip=$2
    local base=/sys/devices/platform/$device/$chip
    log "---- scenario: e-stop on GPIO mid-session (machine configuration with interlocks on /dev/$chip)"
    # All lines active-high, bias as-is: the rig sets each level through sysfs `pull` (a bias
    # requested by smpctl would override it). Healthy: estop low, pedal high, contact high.
    echo pull-down > "$base/sim_gpio0/pull"
    echo pull-up > "$base/sim_gpio1/pull"
    echo pull-up > "$base/sim_gpio2/pull"
    local toml=$WORK/machine.toml
    {
        echo '[applicator]'
        echo "device = \"$LINK\""
        echo
        echo '[envelope]'
        echo 'lease_ms = 250              # the longest allowed: TCG emulation is slow'
        local offset=0 role
        for role in estop pedal contact; do
            echo
            echo '[[interlock]]'
            echo "name = \"$role\""
            echo "role = \"$role\""
            echo "chip = \"$chip\""
            echo "line = $offset"
            echo 'active_low = false'
            echo 'bias = "as-is"'
            echo 'debounce_ms = 10'
            offset=$((offset + 1))
        done
        echo
        echo '[[output]]'
        echo 'name = "needle-power"'
        echo 'role = "needle-power"'
        echo "chip = \"$chip\""
        echo 'line = 3'
        echo 'active_low = false'
    } > "$toml"
    chmod 0644 "$toml"
    local record=$WORK/record-estop.ndjson summary=$WORK/estop.json
    start_sim "$record" 0.25 || return 1
    # Once 40 dots are done, the e-stop line goes active (a background watcher on the events).
    (
        wait_for 120 grep -q '"done":[4-9][0-9]' "$WORK/estop.ndjson" || exit 0
        cat "$base/sim_gpio3/value" > "$WORK/power-before" 2>/dev/null
        $PY -c 'import time; print(time.clock_gettime(time.CLOCK_MONOTONIC))' > "$WORK/estop.t"
        echo pull-up > "$base/sim_gpio0/pull"
    ) &
    local watcher=$!
    $PY "$HELPER" session --events "$WORK/estop.ndjson" --stderr "$WORK/estop.err" --summary "$summary" -- \
        setpriv --reuid="$TECH_UID" --regid="$TECH_UID" --groups "$SMP_GID" --reset-env \
        env HOME="/tmp/home-$TECH_UID" USER=smptech "$SMPCTL" run "$PLAN" --config "$toml" \
        --device "$LINK" --operator hil-rig --yes --json
    wait "$watcher"
    # The needle-power output line as the kernel holds it, read back through gpio-sim.
    local power_after; power_after=$(cat "$base/sim_gpio3/value" 2>/dev/null || echo '?')
    local power_before; power_before=$(cat "$WORK/power-before" 2>/dev/null || echo '?')
    stop_sim
    echo pull-down > "$base/sim_gpio0/pull"
    local status; status=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["exit_code"])' "$summary")
    if [[ $power_before != 1 || $power_after != 0 ]]; then
        fail "gpio e-stop mid-session: needle-power line (sim_gpio3/value) was '$power_before' while armed and '$power_after' after the e-stop (want 1 then 0)"
        return 1
    fi
    pass "gpio e-stop mid-session: needle-power output line read back through sim_gpio3/value: 1 while armed, 0 after the e-stop"
    if [[ -s $WORK/estop.t ]] && ((status != 0)) && grep -q '"state":"estop"' "$WORK/estop.ndjson" \
            && $PY "$HELPER" record-check --plan "$PLAN" --record "$record" --account "$WORK/estop.ndjson" \
                > "$WORK/estop.check" 2>&1; then
        pass "gpio e-stop mid-session: smpctl stopped (exit $status), applicator latched in estop, account matches the record"
    else
        fail "gpio e-stop mid-session: exit $status, or no estop state, or the record does not match"
        show "$WORK/estop.check" 2>/dev/null; grep -v '"progress"' "$WORK/estop.ndjson" | tail -n 5 | show; show "$WORK/estop.err"
        return 1
    fi
    figure "$($PY -c '
import json, sys
summary = json.load(open(sys.argv[1]))
edge = float(open(sys.argv[2]).read())
after = [e for e in summary["events"] if e["mono"] >= edge and e["event"] in ("device", "held", "finished", "error")]
if after:
    name, ms = after[0]["event"], (after[0]["mono"] - edge) * 1000
    print(f"GPIO e-stop: first reaction ({name}) {ms:.1f} ms after the edge (sysfs pull write)")
else:
    print("GPIO e-stop: no reaction event after the edge")' "$summary" "$WORK/estop.t")"
}

# make_sim_chip NAME LINES : a gpio-sim chip of its own (configfs device NAME, lines named
# estop, pedal, contact, needle-power, … in order); prints "DEVICE CHIP" (gpio-sim.N gpiochipM).
make_sim_chip() {
    local name=$1 count=$2 sim=/sys/kernel/config/gpio-sim/$1 offset role
    mkdir -p "$sim/bank0" || return 1
    echo "$count" > "$sim/bank0/num_lines"
    echo "$name" > "$sim/bank0/label"
    local roles=(estop pedal contact needle-power)
    for ((offset = 0; offset < count; offset++)); do
        mkdir -p "$sim/bank0/line$offset"; echo "${roles[offset]:-spare$offset}" > "$sim/bank0/line$offset/name"
    done
    echo 1 > "$sim/live" || return 1
    local chip; chip=$(cat "$sim/bank0/chip_name")
    wait_for 10 test -c "/dev/$chip" || return 1
    udevadm settle --timeout=30
    echo "$(cat "$sim/dev_name") $chip"
}
# remove_sim_chip NAME : the chip goes away (live = 0), then its configfs directories.
remove_sim_chip() {
    local sim=/sys/kernel/config/gpio-sim/$1
    [[ -d $sim ]] || return 0
    [[ $(cat "$sim/live") == 0 ]] || echo 0 > "$sim/live"
    rmdir "$sim"/bank0/line* "$sim/bank0" "$sim" 2>/dev/null
}

# A GPIO chip removed under smpctl: first what the kernel does to open line requests when a chip
# goes (a probe on a chip of its own: do poll/epoll sleepers wake, what do read and get-value
# return), then a session whose interlock inputs are on a chip that is removed mid-session.
scenario_gpio_remove() {
    log "---- scenario: a GPIO chip removed under open line requests (kernel behaviour)"
    local pair device chip
    if ! pair=$(make_sim_chip smp-probe 2); then fail "gpio-remove: cannot make the probe chip"; return 1; fi
    read -r device chip <<<"$pair"
    if $PY "$HELPER" gpio-remove-probe --chip "$chip" --live /sys/kernel/config/gpio-sim/smp-probe/live \
            > "$WORK/gpio-remove-probe.json" 2>&1; then
        log "gpio-remove probe (/dev/$chip, uAPI v1 line event in an epoll set, uAPI v2 line request):"
        show "$WORK/gpio-remove-probe.json"
        figure "GPIO chip removal, kernel $(uname -r): $($PY -c '
import json, sys
r = json.load(open(sys.argv[1]))
def short(x): return x if isinstance(x, str) else json.dumps(x)
print("poll sleeper " + short(r.get("poll_sleeper")) + "; epoll (v1 set) sleeper " + short(r.get("epoll_v1_sleeper"))
      + "; read " + short(r.get("read_after_removal")) + "; get-value " + short(r.get("get_value_after_removal")))' \
            "$WORK/gpio-remove-probe.json")"
    else
        fail "gpio-remove: the probe failed"; show "$WORK/gpio-remove-probe.json"
    fi
    remove_sim_chip smp-probe
    scenario_gpio_remove_session
}

# write_machine_toml FILE INPUT_CHIP OUTPUT_CHIP OUTPUT_LINE : estop, pedal, contact on lines 0–2 of
# INPUT_CHIP (active-high, bias as-is: the rig sets the levels through sysfs `pull`), needle power
# on OUTPUT_LINE of OUTPUT_CHIP, lease 250 ms (the longest allowed: TCG emulation is slow).
write_machine_toml() {
    local file=$1 input_chip=$2 output_chip=$3 output_line=$4 offset=0 role
    {
        echo '[applicator]'
        echo "device = \"$LINK\""
        echo
        echo '[envelope]'
        echo 'lease_ms = 250'
        for role in estop pedal contact; do
            echo
            echo '[[interlock]]'
            echo "name = \"$role\""
            echo "role = \"$role\""
            echo "chip = \"$input_chip\""
            echo "line = $offset"
            echo 'active_low = false'
            echo 'bias = "as-is"'
            echo 'debounce_ms = 10'
            offset=$((offset + 1))
        done
        echo
        echo '[[output]]'
        echo 'name = "needle-power"'
        echo 'role = "needle-power"'
        echo "chip = \"$output_chip\""
        echo "line = $output_line"
        echo 'active_low = false'
    } > "$file"
    chmod 0644 "$file"
}

# The chip carrying the interlock inputs is removed (configfs `live` = 0) after 40 dots, while the
# session runs. The kernel does not wake the line requests' descriptors (see the probe above), so
# only smpctl's health check (a get-value every lease/3) can notice. Expected: the e-stop line is
# lost → e-stop (ESTOP to the applicator, needle power off), inside the lease (250 ms here).
#   power-elsewhere: needle power on the main chip, which stays: read back 0 after; exit 75.
#   power-on-removed: needle power on the removed chip: it cannot be switched off (nor read
#     back): exit 71 and "CUT THE NEEDLE POWER BY HAND" on stderr and in the `finished` event.
scenario_gpio_remove_session() {
    local variant
    for variant in power-elsewhere power-on-removed; do
        log "---- scenario: the interlock chip removed mid-session ($variant)"
        remove_sim_chip smp-removable
        local pair device chip
        if ! pair=$(make_sim_chip smp-removable 4); then fail "gpio-remove ($variant): cannot make the chip"; return 1; fi
        read -r device chip <<<"$pair"
        local base=/sys/devices/platform/$device/$chip main=/sys/devices/platform/$GPIO_DEVICE/$GPIO_CHIP
        echo pull-down > "$base/sim_gpio0/pull"; echo pull-up > "$base/sim_gpio1/pull"; echo pull-up > "$base/sim_gpio2/pull"
        local toml=$WORK/machine-remove-$variant.toml power=$main/sim_gpio3/value
        if [[ $variant == power-elsewhere ]]; then
            write_machine_toml "$toml" "$chip" "$GPIO_CHIP" 3
        else
            write_machine_toml "$toml" "$chip" "$chip" 3; power=$base/sim_gpio3/value
        fi
        local events=$WORK/remove-$variant.ndjson record=$WORK/record-remove-$variant.ndjson summary=$WORK/remove-$variant.json
        : > "$events"; rm -f "$WORK/remove.t" "$WORK/power-before"
        start_sim "$record" 0.25 || return 1
        (
            wait_for 120 grep -q '"done":[4-9][0-9]' "$events" || exit 0
            cat "$power" > "$WORK/power-before" 2>/dev/null
            # The removal write can take a while (gpio-sim tears the chip down inside it): stamp
            # both ends; the chip is gone somewhere in between.
            $PY -c '
import time
start = time.clock_gettime(time.CLOCK_MONOTONIC)
with open("/sys/kernel/config/gpio-sim/smp-removable/live", "w") as live:
    live.write("0\n")
print(start, time.clock_gettime(time.CLOCK_MONOTONIC))' > "$WORK/remove.t"
        ) &
        local watcher=$!
        $PY "$HELPER" session --events "$events" --stderr "$WORK/remove-$variant.err" --summary "$summary" -- \
            setpriv --reuid="$TECH_UID" --regid="$TECH_UID" --groups "$SMP_GID" --reset-env \
            env HOME="/tmp/home-$TECH_UID" USER=smptech "$SMPCTL" run "$PLAN" --config "$toml" \
            --device "$LINK" --operator hil-rig --yes --json
        wait "$watcher"
        stop_sim
        local status power_before power_after=""
        status=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["exit_code"])' "$summary")
        power_before=$(cat "$WORK/power-before" 2>/dev/null || echo '?')
        [[ $variant == power-elsewhere ]] && power_after=$(cat "$power" 2>/dev/null || echo '?')
        remove_sim_chip smp-removable
        if [[ ! -s $WORK/remove.t ]]; then
            fail "gpio-remove ($variant): the session ended before 40 dots (exit $status)"
            grep -v '"progress"' "$events" | tail -n 5 | show; show "$WORK/remove-$variant.err"; continue
        fi
        # When smpctl noticed: its log line "… lost while checking that the chip is still there"
        # (written right after the e-stop was performed, time-stamped as it arrived) and, when the
        # session printed it, the `interlock` event to estopped (cause "… line lost", with the
        # transition's own CLOCK_MONOTONIC time); when the applicator confirmed: its `device`
        # estop event. All against the removal write (both ends stamped).
        local verdict
        verdict=$($PY - "$summary" "$WORK/remove.t" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
started, returned = map(float, open(sys.argv[2]).read().split())
ms = lambda t: f"{(t - returned) * 1000:.1f}"
logged = next((l["mono"] for l in summary["stderr_lines"] if "lost while" in l["text"] and l["mono"] >= started), None)
cause = next((l["text"].split("] ", 1)[-1] for l in summary["stderr_lines"]
              if "line lost" in l["text"] and "estopped" in l["text"]), None)
latched = next((e["mono"] for e in summary["events"] if e["event"] == "device" and e.get("state") == "estop"), None)
if logged is None or cause is None:
    print("none")
else:
    print(ms(logged), f"{(returned - started) * 1000:.1f}", ms(latched) if latched else "never", cause)
EOF
)
        local finished; finished=$(grep '"event":"finished"' "$events" | tail -n 1)
        local transition; transition=$(grep '"event":"interlock"' "$events" | grep '"to":"estopped"' | grep 'line lost' | head -n 1)
        if [[ $verdict == none ]]; then
            fail "gpio-remove ($variant): smpctl did not report the e-stop line lost after the chip was removed (exit $status)"
            grep -v '"progress"' "$events" | tail -n 8 | show; show "$WORK/remove-$variant.err"; continue
        fi
        local detect_ms write_ms latched_ms cause
        read -r detect_ms write_ms latched_ms cause <<<"$verdict"
        figure "GPIO chip removed mid-session ($variant): smpctl e-stopped on the lost line ${detect_ms} ms after the removal write returned (the write took ${write_ms} ms), the applicator reported estop ${latched_ms} ms after it; lease 250 ms, a check every 62.5 ms. $cause"
        [[ -n $transition ]] || log "note: no \`interlock\` event for the lost line in the NDJSON (the session had already ended when it reached the session queue); the log line says it"
        # From the moment the kernel has removed the chip (the write returned): inside the lease.
        if ! awk -v d="$detect_ms" 'BEGIN { exit !(d < 250) }'; then
            fail "gpio-remove ($variant): the lost e-stop line was acted on ${detect_ms} ms after the chip was removed (write returned), not inside the 250 ms lease"
            continue
        fi
        if ! grep -q '"state":"estop"' "$events"; then
            fail "gpio-remove ($variant): the applicator did not latch in estop"; grep -v '"progress"' "$events" | tail -n 5 | show; continue
        fi
        if ! $PY "$HELPER" record-check --plan "$PLAN" --record "$record" --account "$events" > "$WORK/remove.check" 2>&1; then
            fail "gpio-remove ($variant): the account does not match the simulator's record"; show "$WORK/remove.check"; continue
        fi
        if [[ $variant == power-elsewhere ]]; then
            if ((status == 75)) && [[ $power_before == 1 && $power_after == 0 ]]; then
                pass "gpio-remove ($variant): e-stop on the lost line ${detect_ms} ms after the chip went ($cause), applicator latched, needle power read back 1 then 0, exit 75, account matches the record"
            else
                fail "gpio-remove ($variant): exit $status (want 75), needle power '$power_before' then '$power_after' (want 1 then 0)"
                show <<<"$finished"; show "$WORK/remove-$variant.err"
            fi
        else
            if ((status == 71)) && grep -q 'CUT THE NEEDLE POWER BY HAND' "$WORK/remove-$variant.err" \
                    && grep -q '"needle_power_off_failed"' <<<"$finished"; then
                pass "gpio-remove ($variant): e-stop on the lost line ${detect_ms} ms after the chip went, applicator latched; needle power (on the removed chip) could not be switched off: exit 71, 'cut the needle power by hand' on stderr and in the finished event"
            else
                fail "gpio-remove ($variant): exit $status (want 71) or no 'CUT THE NEEDLE POWER BY HAND' on stderr / needle_power_off_failed in the finished event"
                show <<<"$finished"; show "$WORK/remove-$variant.err"
            fi
        fi
    done
}

# ============================================================================================
# Real applicator (SMP_HIL_DEVICE): what can run without a VM
# ============================================================================================
# The Debian package's /etc/security/limits.d/10-smpctl.conf (packaging/deb/smp-limits.conf), read by
# pam_limits as at a login (runuser opens a PAM session; setpriv would not): a member of smp gets
# rtprio 99 and SCHED_FIFO, one outside it does not, and smpctl then refuses a machine file with
# [host] realtime_priority (exit 77) before anything starts. Here, not in make test-deb: raising
# RLIMIT_RTPRIO needs CAP_SYS_RESOURCE, which the VM's root has and a container's root may not.
scenario_rtprio() {
    log "---- scenario: the package's limits.d line lets group smp use SCHED_FIFO"
    local limits tech guest status
    limits=$(mktemp -d)
    cp "$REPO/packaging/deb/smp-limits.conf" "$limits/10-smpctl.conf"
    mount --bind "$limits" /etc/security/limits.d || { fail "rtprio: cannot bind-mount limits.d"; return; }
    printf '[host]\nrealtime_priority = 50\n' >"$WORK/rt.toml"
    mkdir -p "/tmp/home-$GUEST_UID" && chown "$GUEST_UID:$GUEST_UID" "/tmp/home-$GUEST_UID"
    chmod 0644 "$WORK/rt.toml"
    # shellcheck disable=SC2016  # expanded by the user's shell
    tech=$(runuser -u smptech -- sh -c 'echo "$(ulimit -r)"; chrt -f 50 true && echo fifo' 2>&1 | tr '\n' ' ')
    # shellcheck disable=SC2016
    guest=$(runuser -u smpguest -- sh -c 'ulimit -r' 2>&1)
    runuser -u smpguest -- env HOME="/tmp/home-$GUEST_UID" "$SMPCTL" run "$PLAN" --sim --time-scale 0 --yes \
        --config "$WORK/rt.toml" --db "/tmp/home-$GUEST_UID/rt.sqlite" >"$WORK/rt-guest.out" 2>&1
    status=$?
    umount /etc/security/limits.d
    if [[ $tech == "99 fifo " && $guest == 0 ]] && ((status == 77)) && grep -q 'limits.d/smp.conf' "$WORK/rt-guest.out"; then
        pass "rtprio: smptech (group smp) rtprio 99 and SCHED_FIFO 50; smpguest rtprio 0, smpctl run with realtime_priority = 50: exit 77 with the advice (limits.d/smp.conf)"
    else
        fail "rtprio: smptech '$tech' (want '99 fifo '), smpguest rtprio '$guest' (want 0), its smpctl run exit $status (want 77)"
        show "$WORK/rt-guest.out"
    fi
}

# Power cuts of the records' disk (issue 14, item 4; docs/reliability.md, "Power cut"). The
# database lives on ext4 on a device-mapper device over a loop device. A cut: smpctl is frozen
# (SIGSTOP: the computer stops), the device-mapper table is swapped for `error` without flushing
# (what had not reached the disk is lost; later writeback fails), smpctl is killed, the file system
# unmounted, the linear table put back, caches dropped, and the file system mounted again (its
# journal replayed) — the disk as the power cut left it. The simulator, the applicator on its own
# power, runs on: the resume meets the same boot. Checked after each cut (hil_helper.py
# powercut-check): PRAGMA integrity_check ok, every dot the simulator injected recorded done, sent,
# interrupted or ambiguous, never planned; then `smpctl resume` until complete (dots in doubt
# skipped): nothing injected twice, nothing recorded done that was not. Where the cuts land: a
# clean session is timed first, from its `armed` event to its end (the streaming); cuts 1–4 come
# 0.4, 0.9, 1.4 and 1.9 s after smpctl starts (under emulation: start-up, the database being
# created, the handshake), cut i ≥ 5 of N at (i - 4.5)/(N - 4) of the streaming after `armed`
# (its events go to the VM's tmpfs, polled every 50 ms). Runs only when named (--only powercut).
scenario_powercut() {
    local cuts=${HIL_POWERCUT_POINTS:-20} name=smp-records mnt=/tmp/records img=/tmp/powercut.img
    log "---- scenario: $cuts power cuts of the records' disk during sessions (device-mapper)"
    local tool
    for tool in dmsetup losetup mkfs.ext4 blockdev; do
        command -v "$tool" >/dev/null || { fail "powercut: no $tool"; return 1; }
    done
    truncate -s 128M "$img"
    local loopdev sectors
    loopdev=$(losetup -f --show "$img") || { fail "powercut: losetup (no loop device?)"; return 1; }
    sectors=$(blockdev --getsz "$loopdev")
    table() { dmsetup suspend --noflush --nolockfs "$name" && dmsetup load "$name" --table "0 $sectors $1" \
        && dmsetup resume "$name"; }
    dmsetup create --noudevsync "$name" --table "0 $sectors linear $loopdev 0" \
        || { fail "powercut: dmsetup create (no dm-mod?)"; return 1; }
    dmsetup mknodes "$name"
    mkfs.ext4 -q -F "/dev/mapper/$name" || { fail "powercut: mkfs.ext4"; return 1; }
    mkdir -p "$mnt"
    local config=$WORK/powercut.toml
    printf '[envelope]\nlease_ms = 250\n[host]\noperator = "hil-rig"\n' > "$config"

    # One clean session first: its duration places the cuts.
    mount -t ext4 "/dev/mapper/$name" "$mnt" || { fail "powercut: mount"; return 1; }
    local link=/tmp/powercut-app sim t0 duration run
    "$SMPCTL" sim --link "$link" --record "$WORK/powercut-truth-0.ndjson" --time-scale 0.05 > /dev/null 2>> "$WORK/sim.log" &
    sim=$!
    wait_for 20 test -e "$link" || { fail "powercut: the simulator did not start"; kill "$sim"; return 1; }
    "$SMPCTL" run "$PLAN" --device "$link" --db "$mnt/records-0.sqlite" --config "$config" --yes --json \
        > /tmp/powercut-run-0.ndjson 2> "$WORK/powercut-run-0.err" &
    run=$!
    wait_for 60 grep -q '"armed"' /tmp/powercut-run-0.ndjson
    t0=$(date +%s.%N)
    wait "$run" || { fail "powercut: the clean session failed: exit $?"; show "$WORK/powercut-run-0.err"; kill "$sim"; return 1; }
    duration=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    kill -TERM "$sim"; wait "$sim" 2>/dev/null
    umount "$mnt"
    log "powercut: a clean session streamed for $duration s after it was armed; cutting at $cuts points"

    local i delay id status attempt failed=0 mid=0 before
    for ((i = 1; i <= cuts; i++)); do
        local db=$mnt/records-$i.sqlite truth=$WORK/powercut-truth-$i.ndjson state=$WORK/powercut-$i.json
        mount -t ext4 "/dev/mapper/$name" "$mnt" || { fail "powercut $i: mount"; failed=1; break; }
        "$SMPCTL" sim --link "$link" --record "$truth" --time-scale 0.05 > /dev/null 2>> "$WORK/sim.log" &
        sim=$!
        wait_for 20 test -e "$link" || { fail "powercut $i: the simulator did not start"; kill "$sim"; failed=1; break; }
        "$SMPCTL" run "$PLAN" --device "$link" --db "$db" --config "$config" --yes --json \
            > "/tmp/powercut-run-$i.ndjson" 2> "$WORK/powercut-run-$i.err" &
        run=$!
        if ((i <= 4)); then
            before=start delay=$(awk -v i="$i" 'BEGIN { printf "%.1f", 0.5 * i - 0.1 }')
        else
            before=armed delay=$(awk -v i="$i" -v n="$cuts" -v d="$duration" 'BEGIN { printf "%.3f", (i - 4.5) / (n - 4) * d }')
            wait_for 60 grep -q '"armed"' "/tmp/powercut-run-$i.ndjson"
        fi
        sleep "$delay"
        kill -STOP "$run" 2>/dev/null           # the computer stops…
        table error                             # …and what had not reached its disk is lost
        kill -KILL "$run" 2>/dev/null; wait "$run" 2>/dev/null
        umount "$mnt" 2>/dev/null || umount -l "$mnt"
        table "linear $loopdev 0"
        blockdev --flushbufs "/dev/mapper/$name"; echo 3 > /proc/sys/vm/drop_caches
        mount -t ext4 "/dev/mapper/$name" "$mnt" || { fail "powercut $i: the file system does not mount after the cut"; failed=1; kill "$sim"; break; }
        if ! $PY "$HELPER" powercut-check --stage cut --db "$db" --record "$truth" --state "$state" > "$WORK/powercut-$i.check" 2>&1; then
            fail "powercut $i (at $delay s): the records after the cut"; show "$WORK/powercut-$i.check"; failed=1
        fi
        cp "/tmp/powercut-run-$i.ndjson" "$WORK/"
        grep -q '"finished"' "$WORK/powercut-run-$i.ndjson" || mid=$((mid + 1))
        # Finish the session as an operator would: resume; dots in doubt skipped.
        status=1
        for ((attempt = 0; attempt < 6 && status != 0; attempt++)); do
            id=$("$SMPCTL" sessions --json --db "$db" 2>/dev/null | $PY -c 'import json,sys; l=json.load(sys.stdin); print(l[-1]["id"] if l else "")' 2>/dev/null)
            if [[ -z $id ]]; then
                "$SMPCTL" run "$PLAN" --device "$link" --db "$db" --config "$config" --yes --json >> "$WORK/powercut-resume-$i.ndjson" 2>> "$WORK/powercut-resume-$i.err"
                status=$?; continue
            fi
            "$SMPCTL" resume "$id" --device "$link" --db "$db" --config "$config" --yes --json \
                $( ((status == 64)) && echo --ambiguous skip ) >> "$WORK/powercut-resume-$i.ndjson" 2>> "$WORK/powercut-resume-$i.err"
            status=$?
            if grep -q 'nothing to resume' "$WORK/powercut-resume-$i.err" 2>/dev/null; then status=0; fi
        done
        kill -TERM "$sim"; wait "$sim" 2>/dev/null
        if ! $PY "$HELPER" powercut-check --stage final --db "$db" --record "$truth" --state "$state" >> "$WORK/powercut-$i.check" 2>&1; then
            fail "powercut $i (at $delay s): after the resumes"; show "$WORK/powercut-$i.check"; show "$WORK/powercut-resume-$i.err"; failed=1
        fi
        log "powercut $i, $delay s after $before: $(grep -h '^cut:' "$WORK/powercut-$i.check")"
        umount "$mnt"
    done
    dmsetup remove "$name"; losetup -d "$loopdev"; rm -f "$img"
    figure "power cuts: $cuts points, $mid of them before the session's end (the rest after its last dot)"
    ((failed == 0)) && pass "power cut at $cuts points: the database opens, integrity_check ok, every injected dot done or in doubt after the cut, never planned; resumed to completion with none injected twice"
}

run_device_mode() {
    local device=${HIL_DEVICE:?}
    log "real applicator at $device (no VM, no simulator: no ground-truth record)"
    [[ -e $device ]] || { fail "no device at $device"; return 1; }
    if has_subcommand devices; then
        if "$SMPCTL" devices --json > "$WORK/devices.json" 2>&1; then
            pass "smpctl devices finds an applicator"; show "$WORK/devices.json"
        else
            fail "smpctl devices finds no applicator"; show "$WORK/devices.json"
        fi
    fi
    log "udev: $(stat -c '%n group %G mode %a' "$(readlink -f "$device")")"
    if "$SMPCTL" run "$PLAN" --device "$device" --operator hil-rig --yes --json > "$WORK/session.ndjson" 2> "$WORK/session.err"; then
        pass "smpctl run $PLAN --device $device: exit 0"
        grep '"finished"' "$WORK/session.ndjson" | tail -n 1 | show
    else
        fail "smpctl run $PLAN --device $device: exit $?"; tail -n 5 "$WORK/session.ndjson" | show; show "$WORK/session.err"
    fi
    if ((EUID == 0)); then
        local out status
        mkdir -p "$WORK/home-nobody" && chown 65534:65534 "$WORK/home-nobody"
        out=$(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$WORK/home-nobody" \
            "$SMPCTL" run "$PLAN" --device "$device" --operator hil-rig --yes --json 2>&1 >/dev/null)
        status=$?
        if ((status == 77)); then pass "nobody (not in smp): exit 77"; else fail "nobody (not in smp): exit $status (want 77)"; show <<<"$out"; fi
    else
        pending "permission check: run as root to test a user outside group smp"
    fi
    pending "unplug mid-session on a real applicator: by hand (pull the cable during \`smpctl run --json\`; expect exit 69 and a finished event that adds up)"
}

# ============================================================================================
log "smpctl: $SMPCTL"
[[ -x $SMPCTL ]] || { fail "no smpctl binary at $SMPCTL"; finish; exit 1; }
if [[ $MODE == device ]]; then
    run_device_mode
    finish; exit $?
fi

setup_ok=1
setup_users && setup_udev && setup_gadget && check_rule || setup_ok=0
if ((setup_ok)) || ((KEEP_GOING)); then
    if wants devices; then check_devices; fi
    if wants session; then scenario_session; fi
    if wants permission; then scenario_permission; fi
    if wants unplug; then scenario_unplug; fi
    if wants rtprio; then scenario_rtprio; fi
fi
# Only when named: 20 sessions and their resumes take minutes under emulation (make powercut).
if [[ ",$ONLY," == *",powercut,"* ]]; then scenario_powercut; fi
if ((${HIL_SELFTEST_BROKEN_RULE:-0} == 0)) && wants_gpio; then
    GPIO_DEVICE=""
    scenario_gpio
    if [[ -n $GPIO_DEVICE ]] && wants gpio-remove; then scenario_gpio_remove; fi
fi
finish
