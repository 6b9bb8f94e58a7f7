#!/usr/bin/env python3
"""Helpers for hil/scenarios.sh (standard library only; runs inside the VM or on the host).

  record-check   compare the simulator's ground-truth record with a plan (each dot at most or
                 exactly once) and, optionally, with smpctl's account (its `finished` event)
  session        run a command (smpctl run/resume --json), time-stamp every NDJSON line it prints
                 on CLOCK_MONOTONIC and, optionally, unplug the USB gadget (write "" to its UDC)
                 once the session has done N dots; writes a JSON summary
  latency        turn a `session` summary plus `dmesg` into the unplug-detection figures
  gpio-edges     toggle a gpio-sim line's pull and time the edges a `gpiomon` process reports
  gpio-remove-probe
                 what the kernel does to open line requests (uAPI v1 line event, uAPI v2 line
                 request) when their gpio-sim chip is removed: poll/epoll wake-ups, read, get-value
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


# ---- powercut-check --------------------------------------------------------------------------------

def powercut_check(args):
    """The records after a power cut (--stage cut) and after the resumes that finished the session
    (--stage final), against the simulator's ground truth. --state keeps, between the stages, the
    dots that were in doubt after the cut (the operator may skip those, and only those)."""
    import sqlite3
    record = load_ndjson(args.record) if os.path.exists(args.record) else []
    injected = {}
    for entry in record:
        injected.setdefault(entry["dot"], []).append(entry["outcome"])
    problems = []
    status, states, integrity = {}, {}, "no database"
    if os.path.exists(args.db):
        # Opened as smpctl would reopen it: SQLite recovers the WAL left by the cut.
        con = sqlite3.connect(args.db, timeout=30)
        try:
            integrity = "; ".join(row[0] for row in con.execute("PRAGMA integrity_check"))
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "session" in tables:
                states = dict(con.execute("SELECT id, state FROM session"))
                status = dict(con.execute("SELECT dot_id, status FROM dot"))
        finally:
            con.close()
        if integrity != "ok":
            problems.append(f"PRAGMA integrity_check: {integrity}")
    counts = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    if args.stage == "cut":
        doubted = sorted(d for d, s in status.items() if s in ("sent", "ambiguous", "interrupted"))
        with open(args.state, "w") as handle:
            json.dump({"doubted": doubted}, handle)
        for dot in sorted(injected):
            if status.get(dot, "planned") not in ("done", "sent", "interrupted", "ambiguous"):
                problems.append(f"dot {dot} injected ({injected[dot][-1]}) but recorded {status.get(dot, 'nothing')}")
        print(f"cut: injected {len(injected)}, recorded {counts}, sessions {states}, integrity {integrity}")
    else:
        with open(args.state) as handle:
            doubted = set(json.load(handle)["doubted"])
        twice = sorted(d for d, outcomes in injected.items() if len(outcomes) > 1)
        if twice:
            problems.append(f"injected more than once: {twice[:20]}")
        for dot, outcomes in sorted(injected.items()):
            s = status.get(dot, "planned")
            if s == "planned" or (s == "skipped" and dot not in doubted):
                problems.append(f"dot {dot} injected ({outcomes[-1]}) but recorded {s}")
        wrong = sorted(d for d, s in status.items() if s == "done" and injected.get(d, ["none"])[-1] != "done")
        if wrong:
            problems.append(f"recorded done, not injected to the end: {wrong[:20]}")
        if not states or any(state != "completed" for state in states.values()):
            problems.append(f"session not completed after the resumes: {states}")
        print(f"final: injected {len(injected)} ({len(twice)} twice), recorded {counts}, sessions {states}, "
              f"integrity {integrity}")
    for problem in problems:
        print(f"powercut-check: {problem}")
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
    # stderr through a pipe too: each of its lines is time-stamped on arrival (`stderr_lines`).
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    summary = {"command": command, "started_mono": started, "unplug": None, "events": [], "stderr_lines": []}
    buffer = b""
    err_buffer = b""
    err_open = True
    unplugged = False
    while True:
        watched = [process.stdout] + ([process.stderr] if err_open else [])
        ready, _, _ = select.select(watched, [], [], 0.5)
        if not ready:
            if args.timeout and monotonic() - started > args.timeout:
                process.kill()
                summary["timed_out"] = True
                break
            continue
        if process.stderr in ready:
            chunk = os.read(process.stderr.fileno(), 65536)
            stamp = monotonic()
            if not chunk:
                err_open = False
            err_buffer += chunk
            while b"\n" in err_buffer:
                raw, err_buffer = err_buffer.split(b"\n", 1)
                text = raw.decode("utf-8", "replace")
                stderr_out.write(text + "\n")
                stderr_out.flush()
                summary["stderr_lines"].append({"mono": stamp, "text": text})
            if process.stdout not in ready:
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
                                      "done": event.get("done"), "outcome": event.get("outcome"),
                                      "state": event.get("state"), "to": event.get("to"),
                                      "cause": event.get("cause")})
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
    if err_open:
        rest = process.stderr.read()
        stamp = monotonic()
        for text in (err_buffer + rest).decode("utf-8", "replace").splitlines():
            stderr_out.write(text + "\n")
            summary["stderr_lines"].append({"mono": stamp, "text": text})
    elif err_buffer:
        stderr_out.write(err_buffer.decode("utf-8", "replace") + "\n")
    stderr_out.flush()
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

class _LineReader:
    """Lines from a pipe with a timeout each. Reads the fd itself: a buffered reader can hold a
    second line that `select` then never reports."""

    def __init__(self, fd):
        self.fd, self.buffer, self.eof = fd, b"", False

    def next(self, timeout):
        deadline = monotonic() + timeout
        while b"\n" not in self.buffer and not self.eof:
            left = deadline - monotonic()
            if left <= 0:
                return None
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 4096)
                self.eof = not chunk
                self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace").strip()


def _edge_interrupt_requested(consumer):
    """Whether /proc/interrupts lists an interrupt whose handler is `consumer`'s. The kernel marks
    a line used (gpioinfo's "[used]") before it requests the line's edge interrupt
    (lineevent_create / edge_detector_setup), so "[used]" alone does not say an edge would be seen."""
    try:
        with open("/proc/interrupts") as handle:
            return any(line.split()[-1:] == [consumer] for line in handle)
    except OSError:
        return False


def gpio_edges(args):
    """Starts `gpiomon` (the given command), then writes pull-up / pull-down to the line's sysfs
    `pull` file and times each edge from the write to the line gpiomon prints for it. Stops at the
    first edge not reported (or reported as the wrong kind): the ones after it would pair wrongly.
    On failure the last line on stderr says which edge and why."""
    with open(args.pull, "w") as handle:  # the first edge is a rising one, whatever came before
        handle.write("pull-down")
    monitor = subprocess.Popen(args.command[1:] if args.command[0] == "--" else args.command,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = _LineReader(monitor.stdout.fileno())

    def finish(results, failure):
        if monitor.poll() is None:
            monitor.kill()
        monitor.wait()
        json.dump(results, sys.stdout, indent=1)
        print()
        if failure:
            stderr = monitor.stderr.read().decode("utf-8", "replace").strip().replace("\n", " / ")
            print(f"gpio-edges: {failure}; gpiomon exit status {monitor.returncode}"
                  + (f", its stderr: {stderr}" if stderr else ", nothing on its stderr"), file=sys.stderr)
        return 1 if failure else 0

    # Ready when the line is used and its edge interrupt requested (both, see above).
    started = monotonic()
    while True:
        info = subprocess.run(["gpioinfo", args.chip], capture_output=True, text=True).stdout
        line = next((l for l in info.splitlines() if re.match(rf"\s*line\s+{args.line}:", l)), "")
        if "[used" in line and _edge_interrupt_requested(args.consumer):
            break
        if monitor.poll() is not None:
            return finish([], f"gpiomon exited before it requested line {args.line} of {args.chip}")
        if monotonic() - started > args.settle:
            return finish([], f"line {args.line} of {args.chip} not used with its edge interrupt "
                              f"requested by {args.consumer!r} within {args.settle:.0f} s "
                              f"(gpioinfo: {line.strip()!r})")
        time.sleep(0.05)
    results = []
    expected = {"pull-up": "1", "pull-down": "0"}  # gpiomon %e: 1 rising, 0 falling
    edges = ["pull-up", "pull-down"] * args.cycles
    for index, value in enumerate(edges, start=1):
        t_write = monotonic()
        with open(args.pull, "w") as handle:
            handle.write(value)
        line = reader.next(args.edge_timeout)
        t_seen = monotonic()
        if line is None:
            results.append({"pull": value, "seen": False})
            why = "gpiomon's output ended" if reader.eof else f"nothing within {args.edge_timeout:.0f} s"
            return finish(results, f"edge {index} of {len(edges)} ({value}): {why}")
        entry = {"pull": value, "seen": True, "line": line, "write_to_userspace_ms": (t_seen - t_write) * 1000}
        match = re.search(r"(\d+)\s+(\d+)\s*$", line)  # gpiomon --format '%e %s %n'
        if match:
            kernel_ts = int(match.group(1)) + int(match.group(2)) / 1e9
            entry["write_to_kernel_timestamp_ms"] = (kernel_ts - t_write) * 1000
        results.append(entry)
        if line.split()[:1] != [expected[value]]:
            return finish(results, f"edge {index} of {len(edges)} ({value}): gpiomon printed {line!r}, "
                                   f"want event type {expected[value]} first")
        time.sleep(args.gap)
    return finish(results, None)


# ---- gpio-remove-probe -----------------------------------------------------------------------------
# Raw uAPI, no libgpiod: exactly the descriptors the shim holds (v1: a line-event fd inside an epoll
# set; v2: the line request's fd).

def _iowr(number, size):
    return (3 << 30) | (size << 16) | (0xB4 << 8) | number


GPIO_GET_LINEEVENT_IOCTL = _iowr(0x04, 48)
GPIOHANDLE_GET_LINE_VALUES_IOCTL = _iowr(0x08, 64)
GPIO_V2_GET_LINE_IOCTL = _iowr(0x07, 592)
GPIO_V2_LINE_GET_VALUES_IOCTL = _iowr(0x0E, 16)


def _request_v1(chip_fd, offset):
    import fcntl
    import struct
    request = bytearray(struct.pack("III32si", offset, 1, 3, b"hil-probe-v1", 0))
    fcntl.ioctl(chip_fd, GPIO_GET_LINEEVENT_IOCTL, request, True)
    return struct.unpack_from("i", request, 44)[0]


def _request_v2(chip_fd, offset):
    import fcntl
    import struct
    request = bytearray(592)
    struct.pack_into("I", request, 0, offset)
    struct.pack_into("32s", request, 256, b"hil-probe-v2")
    struct.pack_into("Q", request, 288, (1 << 2) | (1 << 4) | (1 << 5))  # input, both edges
    struct.pack_into("I", request, 560, 1)  # num_lines
    fcntl.ioctl(chip_fd, GPIO_V2_GET_LINE_IOCTL, request, True)
    return struct.unpack_from("i", request, 588)[0]


def _get_value(fd, v2):
    import fcntl
    try:
        if v2:
            data = bytearray(16)
            data[8] = 1  # mask: line 0
            fcntl.ioctl(fd, GPIO_V2_LINE_GET_VALUES_IOCTL, data, True)
            return {"ok": data[0] & 1}
        data = bytearray(64)
        fcntl.ioctl(fd, GPIOHANDLE_GET_LINE_VALUES_IOCTL, data, True)
        return {"ok": data[0]}
    except OSError as error:
        return {"errno": error.errno, "error": os.strerror(error.errno)}


def _read(fd):
    try:
        data = os.read(fd, 256)
        return {"bytes": len(data)}
    except OSError as error:
        return {"errno": error.errno, "error": os.strerror(error.errno)}


def _mask_names(mask):
    names = []
    for name in ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM"):
        if mask & getattr(select, name, 0):
            names.append(name)
    return names or ["none"]


def gpio_remove_probe(args):
    chip_fd = os.open(f"/dev/{args.chip}", os.O_RDWR)
    fds = {"v1": _request_v1(chip_fd, 0), "v2": _request_v2(chip_fd, 1)}
    os.close(chip_fd)
    for fd in fds.values():
        os.set_blocking(fd, False)
    result = {"kernel": os.uname().release, "before": {k: _get_value(fd, k == "v2") for k, fd in fds.items()}}
    epoll = select.epoll()
    epoll.register(fds["v1"], select.EPOLLIN | select.EPOLLPRI)  # what the v1 shim does
    poller = select.poll()
    for fd in fds.values():
        poller.register(fd, select.POLLIN | select.POLLPRI)
    # Nothing pending before the removal.
    result["poll_before"] = {name: _mask_names(ev) for fd, ev in poller.poll(0)
                             for name, f in fds.items() if f == fd} or "nothing ready"
    # Sleepers that are already waiting when the chip goes: does the kernel wake them?
    import threading
    wakes = {}

    def sleep_in_poll():
        started = monotonic()
        events = poller.poll(args.wait * 1000)
        wakes["poll"] = (started, monotonic(), {name: _mask_names(ev) for fd, ev in events
                                                for name, f in fds.items() if f == fd})

    def sleep_in_epoll():
        started = monotonic()
        ready = epoll.poll(args.wait)
        wakes["epoll_v1"] = (started, monotonic(), [_mask_names(ev) for _, ev in ready])

    sleepers = [threading.Thread(target=sleep_in_poll), threading.Thread(target=sleep_in_epoll)]
    for thread in sleepers:
        thread.start()
    time.sleep(0.3)
    removed = monotonic()
    with open(args.live, "w") as handle:
        handle.write("0\n")
    result["removal_write_ms"] = round((monotonic() - removed) * 1000, 1)
    for thread in sleepers:
        thread.join()
    for name, (started, woke, what) in wakes.items():
        # poll(2) rescans every descriptor once when its timeout expires, so a sleeper that
        # returns events only at its timeout was NOT woken by the removal.
        by_timeout = woke - started >= args.wait - 0.05
        result[f"{name}_sleeper"] = {
            "woken_by_removal": bool(what) and not by_timeout,
            "returned_ms_after_removal": round((woke - removed) * 1000, 1),
            "returned_ms_after_it_started": round((woke - started) * 1000, 1),
            "events": what or "none"}
    # A fresh poll(0) after the removal: what the descriptors' level says now.
    result["poll_now"] = {name: _mask_names(ev) for fd, ev in poller.poll(0)
                          for name, f in fds.items() if f == fd} or "nothing ready"
    result["read_after_removal"] = {k: _read(fd) for k, fd in fds.items()}
    result["get_value_after_removal"] = {k: _get_value(fd, k == "v2") for k, fd in fds.items()}
    for fd in fds.values():
        os.close(fd)
    epoll.close()
    print(json.dumps(result, indent=1))
    return 0


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

    p = commands.add_parser("powercut-check")
    p.add_argument("--stage", choices=["cut", "final"], required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--state", required=True, help="JSON: the dots in doubt after the cut")
    p.set_defaults(run=powercut_check)

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
    p.add_argument("--consumer", default="gpiomon", help="the monitor's consumer label (its interrupt's name)")
    p.add_argument("--settle", type=float, default=30.0, help="at most this long for gpiomon to start")
    p.add_argument("--edge-timeout", type=float, default=20.0,
                   help="at most this long for each edge (a stall under emulation delays, never loses, one)")
    p.add_argument("--gap", type=float, default=0.2)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(run=gpio_edges)

    p = commands.add_parser("gpio-remove-probe")
    p.add_argument("--chip", required=True, help="gpiochipN of a gpio-sim chip with at least 2 lines")
    p.add_argument("--live", required=True, help="the chip's configfs `live` file (0 removes it)")
    p.add_argument("--wait", type=float, default=2.0)
    p.set_defaults(run=gpio_remove_probe)

    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
