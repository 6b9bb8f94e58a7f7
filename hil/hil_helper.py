#!/usr/bin/env python3
"""Helpers for hil/scenarios.sh (standard library only; runs inside the VM or on the host).

  record-check   compare the simulator's ground-truth record with a plan (each dot at most or
                 exactly once) and, optionally, with smpctl's account (its `finished` event)
  session        run a command (smpctl run/resume --json), time-stamp every NDJSON line it prints
                 on CLOCK_MONOTONIC and, optionally, unplug the USB gadget (write "" to its UDC)
                 once the session has done N dots; writes a JSON summary
  latency        turn a `session` summary plus `dmesg` into the unplug-detection figures
  gpio-edges     toggle a gpio-sim line's pull and time the edges a `gpiomon` process reports
"""

import argparse
import json
import os
import re
import select
import subprocess
import sys
import time


def monotonic():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def load_ndjson(path):
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                sys.exit(f"{path}:{number}: not JSON: {error}")
    return entries


# ---- record-check ---------------------------------------------------------------------------------

def record_check(args):
    with open(args.plan, encoding="utf-8") as handle:
        plan_ids = [dot["id"] for dot in json.load(handle)["dots"]]
    record = load_ndjson(args.record) if os.path.exists(args.record) else []
    counts = {}
    for entry in record:
        counts[entry["dot"]] = counts.get(entry["dot"], 0) + 1
    twice = sorted(dot for dot, count in counts.items() if count > 1)
    unknown = sorted(set(counts) - set(plan_ids))
    missing = [dot for dot in plan_ids if dot not in counts]
    interrupted = sorted(entry["dot"] for entry in record if entry.get("outcome") != "done")
    problems = []
    if twice:
        problems.append(f"dots in the record more than once: {twice[:20]}")
    if unknown:
        problems.append(f"dots in the record that are not in the plan: {unknown[:20]}")
    if args.exactly_once and missing:
        problems.append(f"{len(missing)} plan dots never injected: {missing[:20]}")
    if args.account:
        finished = [e for e in load_ndjson(args.account) if e.get("event") == "finished"]
        if not finished:
            problems.append(f"{args.account}: no `finished` event")
        else:
            f = finished[-1]
            in_doubt = f.get("in_doubt", [])
            cut = f.get("interrupted", [])
            in_doubt_n = len(in_doubt) if isinstance(in_doubt, list) else int(in_doubt)
            cut_n = len(cut) if isinstance(cut, list) else int(cut)
            accounted = f["done"] + in_doubt_n + cut_n + f.get("not_started", 0) + f.get("skipped", 0)
            if accounted != f["total"]:
                problems.append(f"account does not add up: done {f['done']} + in doubt {in_doubt_n} + cut short "
                                f"{cut_n} + not started {f.get('not_started')} + skipped {f.get('skipped', 0)} "
                                f"= {accounted}, total {f['total']}")
            done_this_run = f.get("done_this_run", f["done"])
            if not args.cumulative and not (done_this_run <= len(counts) <= done_this_run + in_doubt_n + cut_n):
                problems.append(f"record has {len(counts)} dots; smpctl says done {done_this_run}, in doubt "
                                f"{in_doubt_n}, cut short {cut_n}")
            print(f"account: outcome {f.get('outcome')}, done {f['done']}, in doubt {in_doubt_n}, "
                  f"cut short {cut_n}, not started {f.get('not_started')}, total {f['total']}, "
                  f"exit {f.get('exit_code')}")
    print(f"record: {len(record)} lines, {len(counts)} distinct dots of {len(plan_ids)} in the plan, "
          f"{len(twice)} twice, {len(interrupted)} cut short")
    for problem in problems:
        print(f"record-check: {problem}")
    return 1 if problems else 0


# ---- session ------------------------------------------------------------------------------------------

def kmsg(text):
    try:
        with open("/dev/kmsg", "w") as handle:
            handle.write(text + "\n")
        return True
    except OSError:
        return False


def session(args):
    command = args.command[1:] if args.command and args.command[0] == "--" else args.command
    events_out = open(args.events, "w", encoding="utf-8")
    stderr_out = open(args.stderr, "w", encoding="utf-8")
    started = monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_out, stdin=subprocess.DEVNULL)
    summary = {"command": command, "started_mono": started, "unplug": None, "events": []}
    buffer = b""
    unplugged = False
    while True:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if not ready:
            if args.timeout and monotonic() - started > args.timeout:
                process.kill()
                summary["timed_out"] = True
                break
            continue
        chunk = os.read(process.stdout.fileno(), 65536)
        stamp = monotonic()
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            events_out.write(line + "\n")
            events_out.flush()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            summary["events"].append({"mono": stamp, "event": event.get("event"),
                                      "done": event.get("done"), "outcome": event.get("outcome")})
            if (args.unplug_after is not None and not unplugged and event.get("event") == "progress"
                    and (event.get("done") or 0) >= args.unplug_after):
                unplugged = True
                marker_before = monotonic()
                marked = kmsg("hil: unplug marker")
                marker_after = monotonic()
                t_unplug = monotonic()
                with open(args.udc, "w") as handle:
                    handle.write("\n")
                t_unplug_done = monotonic()
                summary["unplug"] = {"marker_mono": (marker_before + marker_after) / 2, "marker_written": marked,
                                     "mono": t_unplug, "write_returned_mono": t_unplug_done,
                                     "after_done": event.get("done")}
    summary["exit_code"] = process.wait()
    summary["ended_mono"] = monotonic()
    with open(args.summary, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    print(f"session: exit {summary['exit_code']}, {len(summary['events'])} events"
          + (f", unplugged after {summary['unplug']['after_done']} dots" if summary["unplug"] else ""))
    return 0


# ---- latency ------------------------------------------------------------------------------------------

DMESG_LINE = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
DETECTION_EVENTS = ("dots_in_doubt", "dot_interrupted", "held", "error", "finished")


def latency(args):
    with open(args.summary, encoding="utf-8") as handle:
        summary = json.load(handle)
    unplug = summary.get("unplug")
    if not unplug:
        sys.exit("latency: the session was never unplugged")
    kernel = []
    with open(args.dmesg, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = DMESG_LINE.match(line.rstrip("\n"))
            if match:
                kernel.append((float(match.group(1)), match.group(2)))
    marker = next((t for t, text in kernel if "hil: unplug marker" in text), None)
    disconnect = next((t for t, text in kernel if marker is not None and t >= marker and "USB disconnect" in text), None)
    after = [e for e in summary["events"] if e["mono"] >= unplug["mono"]]
    detect = next((e for e in after if e["event"] in DETECTION_EVENTS), None)
    finished = next((e for e in after if e["event"] == "finished"), None)
    figures = {}
    if detect:
        figures["unplug_to_first_event_ms"] = (detect["mono"] - unplug["mono"]) * 1000
        figures["first_event"] = detect["event"]
    if finished:
        figures["unplug_to_finished_ms"] = (finished["mono"] - unplug["mono"]) * 1000
    if marker is not None and disconnect is not None and detect:
        offset = marker - unplug["marker_mono"]  # printk clock minus CLOCK_MONOTONIC
        kernel_disconnect_mono = disconnect - offset
        figures["kernel_usb_disconnect_after_unplug_ms"] = (kernel_disconnect_mono - unplug["mono"]) * 1000
        figures["kernel_usb_disconnect_to_first_event_ms"] = (detect["mono"] - kernel_disconnect_mono) * 1000
        if finished:
            figures["kernel_usb_disconnect_to_finished_ms"] = (finished["mono"] - kernel_disconnect_mono) * 1000
    json.dump(figures, sys.stdout, indent=1)
    print()
    return 0 if detect else 1


# ---- gpio-edges ---------------------------------------------------------------------------------------

def gpio_edges(args):
    """Starts `gpiomon` (the given command), then writes pull-up / pull-down to the line's sysfs
    `pull` file and times each edge from the write to the line gpiomon prints for it."""
    monitor = subprocess.Popen(args.command[1:] if args.command[0] == "--" else args.command,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # gpiomon must have requested the line before the first edge: wait until gpioinfo says so.
    deadline = monotonic() + args.settle
    while monotonic() < deadline:
        info = subprocess.run(["gpioinfo", args.chip], capture_output=True, text=True).stdout
        line = next((l for l in info.splitlines() if re.match(rf"\s*line\s+{args.line}:", l)), "")
        if "[used" in line:
            break
        time.sleep(0.1)
    else:
        print(f"gpio-edges: gpiomon did not request line {args.line} of {args.chip} within {args.settle} s",
              file=sys.stderr)
    results = []
    for value in ["pull-up", "pull-down"] * args.cycles:
        t_write = monotonic()
        with open(args.pull, "w") as handle:
            handle.write(value)
        ready, _, _ = select.select([monitor.stdout], [], [], 5)
        if not ready:
            results.append({"pull": value, "seen": False})
            continue
        line = monitor.stdout.readline().decode("utf-8", "replace").strip()
        t_seen = monotonic()
        entry = {"pull": value, "seen": True, "line": line, "write_to_userspace_ms": (t_seen - t_write) * 1000}
        match = re.search(r"(\d+)\s+(\d+)\s*$", line)  # gpiomon --format '%e %s %n'
        if match:
            kernel_ts = int(match.group(1)) + int(match.group(2)) / 1e9
            entry["write_to_kernel_timestamp_ms"] = (kernel_ts - t_write) * 1000
        results.append(entry)
        time.sleep(args.gap)
    monitor.kill()
    monitor.wait()
    json.dump(results, sys.stdout, indent=1)
    print()
    seen = [r for r in results if r["seen"]]
    expected = ["1", "0"] * args.cycles  # gpiomon %e: 1 rising, 0 falling
    ok = len(seen) == len(results) and all(r["line"].split()[0] == e for r, e in zip(results, expected))
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="which", required=True)

    p = commands.add_parser("record-check")
    p.add_argument("--plan", required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--exactly-once", action="store_true", help="every plan dot must be in the record")
    p.add_argument("--account", help="smpctl's NDJSON events: its last `finished` event must add up")
    p.add_argument("--cumulative", action="store_true", help="the record spans several runs (resume)")
    p.set_defaults(run=record_check)

    p = commands.add_parser("session")
    p.add_argument("--events", required=True)
    p.add_argument("--stderr", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--unplug-after", type=int)
    p.add_argument("--udc")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(run=session)

    p = commands.add_parser("latency")
    p.add_argument("--summary", required=True)
    p.add_argument("--dmesg", required=True)
    p.set_defaults(run=latency)

    p = commands.add_parser("gpio-edges")
    p.add_argument("--pull", required=True)
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--chip", required=True)
    p.add_argument("--line", type=int, default=0)
    p.add_argument("--settle", type=float, default=15.0, help="at most this long for gpiomon to start")
    p.add_argument("--gap", type=float, default=0.2)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(run=gpio_edges)

    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
