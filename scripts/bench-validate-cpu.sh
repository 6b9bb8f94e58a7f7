#!/usr/bin/env bash
# Whole-process CPU (user + system, from /usr/bin/time) of `smpctl validate PLAN` against
# `python3 -c 'import json; json.load(open(PLAN))'` on the same file, in RUNS pairs, each pair run
# back to back (python first, then smpctl, alternating the order every pair), after one warm-up
# of each (page cache). Prints every pair and the medians, and one JSON line last (make bench:
# raw/validate-cpu.json). Issue 16's goal: the median ratio ≤ 0.5.
#
#   scripts/bench-validate-cpu.sh PLAN SMPCTL [RUNS=7]
set -euo pipefail
PLAN="$1"; SMPCTL="$2"; RUNS="${3:-7}"
cpu() {  # cpu COMMAND...: prints user+system seconds of COMMAND (its output discarded)
    local out; out="$(mktemp)"
    /usr/bin/time -f '%U %S' -o "$out" "$@" > /dev/null 2>&1
    awk '{ printf "%.3f\n", $1 + $2 }' "$out"; rm -f "$out"
}
py=(python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$PLAN")
sm=("$SMPCTL" validate "$PLAN")
cpu "${py[@]}" > /dev/null; cpu "${sm[@]}" > /dev/null
pys=(); sms=()
for i in $(seq 1 "$RUNS"); do
    if (( i % 2 )); then p="$(cpu "${py[@]}")"; s="$(cpu "${sm[@]}")"; else s="$(cpu "${sm[@]}")"; p="$(cpu "${py[@]}")"; fi
    pys+=("$p"); sms+=("$s")
    echo "pair $i: python3 json.load ${p} s, smpctl validate ${s} s, ratio $(awk -v a="$s" -v b="$p" 'BEGIN { printf "%.2f", a / b }') (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
python3 - "${pys[*]}" "${sms[*]}" "$PLAN" <<'PY'
import json, statistics, sys
py = [float(x) for x in sys.argv[1].split()]; sm = [float(x) for x in sys.argv[2].split()]
ratios = [s / p for s, p in zip(sm, py)]
result = {"figure": "validate-cpu", "plan": sys.argv[3], "runs": len(py),
          "python_json_load_cpu_s_median": statistics.median(py), "smpctl_validate_cpu_s_median": statistics.median(sm),
          "ratio_median": round(statistics.median(ratios), 3), "ratio_max": round(max(ratios), 3), "goal_ratio": 0.5,
          "command": "scripts/bench-validate-cpu.sh PLAN SMPCTL RUNS"}
print(f"median: python3 json.load {result['python_json_load_cpu_s_median']:.3f} s CPU, smpctl validate "
      f"{result['smpctl_validate_cpu_s_median']:.3f} s CPU, ratio {result['ratio_median']:.2f} (max {result['ratio_max']:.2f})",
      file=sys.stderr)
print(json.dumps(result))
PY
