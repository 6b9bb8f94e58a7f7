#!/usr/bin/env python3
"""The fault soak of issue 14 (`make soak`; docs/reliability.md, "Fault soak").

    scripts/soak.py [--smpctl PATH] [--seeds N] [--kills N] [--power-cycles N] [--jobs N] [--time-scale S]
    SOAK_QUICK=1 scripts/soak.py        # a short version (make test runs it)

Drives the real `smpctl` binary against `smpctl sim` (a separate process on a pseudo-terminal,
time scale 0 — 0.02 for the delay-ack kind, whose ACKs instant physics leaves none of —
its ground-truth record on) with a 5,000-dot plan (scripts/bench-make-plans.py,
bench-5k.json; SOAK_QUICK uses its first 300 dots), in three campaigns:

  faults        every simulator fault kind alone, and random combinations of them, x N seeds
  kill -9       smpctl killed with SIGKILL at a random moment: during the handshake, mid-stream,
                mid-commit (a random dot count plus 0-1000 ms: the group-commit window), or while a
                `resume` of the killed session runs; a third of them with a link fault rate on, a
                third with a device fault (latch, reset, contact loss, disconnect, stall) planned
                within 40 dots of where the kill is aimed
  power cycle   smpctl killed mid-stream, then the simulator stopped and started again (a new
                boot: queue, counts and epochs lost; half of them with the same --seed) before
                the resume; or the resume killed too, then the power cycle; or (a third) the
                simulator restarted under a running smpctl

Every trial is carried to its end the way an operator would: `smpctl resume` until the session is
complete; a latched or stopped device is power-cycled (restarted, without the faults that already
fired) first; dots in doubt are left out with `--ambiguous skip`, or, in half the trials (odd
seeds), injected again with `--ambiguous redo` (after a power cycle when the applicator has not
rebooted: redo is refused on the same boot). A second injection of a dot the operator chose to redo
is the operator's choice, counted apart ("redone by decision"); any other is a defect. Then the record (the SQLite database, read
here with sqlite3) is compared with the simulator's ground truth (NDJSON, one line per dot the
needle entered the skin for):

  double injections      a dot with more than one ground-truth line
  unrecorded injections  a dot the simulator injected whose record says `planned` after any
                         smpctl process ended (or `skipped` without having been in doubt first):
                         the record must say done, sent, interrupted or ambiguous
  wrongly settled        a dot recorded `done` that the simulator did not inject to the end
  crashes                an smpctl process that died of a signal the soak did not send, or exited
                         70 (EX_SOFTWARE); a simulator that did not stop on SIGINT
  unfinished             a session not `completed` after 10 resumes (not a loss; a hang or a
                         refusal the operator could not get past)

Prints one table (markdown) and writes it, with every trial's details, to the work directory
(.build-soak/). Exit status 1 when any of the last four columns is not 0.
"""

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("SOAK_QUICK", "0") not in ("", "0")
# Every trial's simulator time scale (--time-scale); "0" keeps instant physics (delay-ack: 0.02).
TIME_SCALE = "0"
IN_DOUBT = {"sent", "interrupted", "ambiguous"}
# Settled states: a dot the simulator injected may be recorded as any of these (or `skipped`
# once the operator left it out after it was in doubt), never `planned`.
ACCOUNTED = {"done"} | IN_DOUBT
MAX_RESUMES = 10
PROCESS_TIMEOUT = 180  # s; a process still running then is a hang: killed and counted


# The fault kinds of `smpctl sim --faults` (Sources/FirmwareCore/FaultPlan.swift), each a function
# of the trial's random generator and the plan's size giving one SPEC item.
def _dot(rng, dots):
    return rng.randint(1, dots)


FAULT_KINDS = {
    "corrupt": lambda rng, n: f"corrupt={rng.choice([0.005, 0.01, 0.03])}",
    "drop": lambda rng, n: f"drop={rng.choice([0.005, 0.01, 0.03])}",
    "duplicate": lambda rng, n: f"duplicate={rng.choice([0.01, 0.03, 0.1])}",
    "garbage": lambda rng, n: f"garbage={rng.choice([0.01, 0.03, 0.1])}",
    "delay-ack": lambda rng, n: f"delay-ack={rng.choice([5, 30, 120])}ms",
    "stall-at": lambda rng, n: f"stall-at={_dot(rng, n)}:{rng.choice([50, 200, 600])}ms",
    "reset-at": lambda rng, n: f"reset-at={_dot(rng, n)}",
    "disconnect-at": lambda rng, n: f"disconnect-at={_dot(rng, n)}",
    "estop-at": lambda rng, n: f"estop-at={_dot(rng, n)}",
    "contact-loss-at": lambda rng, n: f"contact-loss-at={_dot(rng, n)}",
    "over-depth-at": lambda rng, n: f"over-depth-at={_dot(rng, n)}",
    "ignore-pace-at": lambda rng, n: f"ignore-pace-at={_dot(rng, n)}",
    "slow": lambda rng, n: f"slow={rng.choice([0.5, 1.5, 3])}",
}
LINK_RATE_KINDS = ("corrupt", "drop", "duplicate", "garbage", "delay-ack", "slow")


def combination(rng, dots):
    """2-5 distinct kinds; an `-at` kind may appear up to 3 times."""
    kinds = rng.sample(sorted(FAULT_KINDS), rng.randint(2, 5))
    items = []
    for kind in kinds:
        repeat = rng.randint(1, 3) if kind.endswith("-at") else 1
        for _ in range(repeat):
            items.append(FAULT_KINDS[kind](rng, dots))
    # stall-at may name one dot once only
    seen, unique = set(), []
    for item in items:
        key = item.split(":")[0] if item.startswith("stall-at") else item
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return ",".join(unique)


def link_faults_only(spec):
    """The items of SPEC that are rates (they apply to every frame, not once): kept across a
    power cycle; the `-at` items fired in the first simulator and are not planned again."""
    return ",".join(i for i in spec.split(",") if i and i.split("=")[0] in LINK_RATE_KINDS)


class Trial:
    """One session carried to its end: a simulator process, smpctl processes, one database."""

    def __init__(self, work, name, smpctl, plan, config, seed, faults, decision="skip"):
        self.name = name
        self.dir = work / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.smpctl, self.plan, self.config = smpctl, plan, config
        self.seed, self.faults = seed, faults
        self.link = str(self.dir / "applicator")
        self.truth = self.dir / "truth.ndjson"
        self.db = str(self.dir / "records.sqlite")
        self.sim = None
        self.log = []
        self.kills = 0
        self.power_cycles = 0
        self.cycles_after_kill = 0   # power cycles between a kill -9 and the next smpctl
        self.killed_last = False
        self.crashes = 0
        self.faults_injected = Counter()
        self.unrecorded = set()      # dot ids, over every check
        self.doubted = set()         # dots in doubt when the operator decided (skip or redo)
        self.decision = decision     # what the operator answers to dots in doubt: skip or redo
        self.redo_refused = False
        self.resume_args = []
        # Instant physics, except where a fault needs dots to take time (see fault_trial).
        self.time_scale = TIME_SCALE

    def note(self, text):
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    # --- the simulator ---
    def start_sim(self, seed, faults):
        args = [self.smpctl, "sim", "--link", self.link, "--record", str(self.truth),
                "--time-scale", self.time_scale, "--seed", str(seed)]
        if faults:
            args += ["--faults", faults]
        self.sim_stderr = open(self.dir / f"sim-{self.power_cycles}.err", "w")
        self.sim = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.sim_stderr, text=True)
        line = self.sim.stdout.readline()  # the tty path, once it is open and linked
        if not line:
            raise RuntimeError(f"{self.name}: the simulator did not start: {args}")
        self.note(f"sim {self.sim.pid} seed {seed} faults '{faults}'")

    def stop_sim(self):
        if not self.sim:
            return
        self.sim.send_signal(signal.SIGINT)
        try:
            self.sim.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.sim.kill()
            self.sim.wait()
            self.crashes += 1
            self.note("CRASH: the simulator did not stop on SIGINT")
        self.sim_stderr.close()
        text = (self.dir / f"sim-{self.power_cycles}.err").read_text()
        for line in text.splitlines():
            if line.startswith("smpctl sim: faults injected: "):
                self.faults_injected.update(json.loads(line.split(": ", 2)[2]))
        self.sim = None

    def power_cycle(self, same_seed):
        self.stop_sim()
        self.power_cycles += 1
        if self.killed_last:
            self.cycles_after_kill += 1
            self.killed_last = False
        seed = self.seed if same_seed else self.seed + 7919 * self.power_cycles
        self.start_sim(seed, link_faults_only(self.faults))

    # --- smpctl ---
    def smpctl_run(self, args, kill=None):
        """Runs smpctl; `kill(event, elapsed)` is asked on every NDJSON line (and every 5 ms):
        True kills it with SIGKILL. Returns (exit status or None if killed, stdout lines)."""
        proc = subprocess.Popen([self.smpctl] + args, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        started = time.monotonic()
        lines, killed = [], threading.Event()
        stderr_text = []
        reader_err = threading.Thread(target=lambda: stderr_text.append(proc.stderr.read()))
        reader_err.start()

        def do_kill():
            if not killed.is_set() and proc.poll() is None:
                killed.set()
                os.kill(proc.pid, signal.SIGKILL)

        if kill:
            def ticker():  # a kill due at a time, whatever is printed
                while proc.poll() is None and not killed.is_set():
                    if kill(None, time.monotonic() - started):
                        do_kill()
                    time.sleep(0.005)
            threading.Thread(target=ticker, daemon=True).start()
        def read_events():
            for line in proc.stdout:
                lines.append(line)
                if kill and not killed.is_set():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        event = None
                    if kill(event, time.monotonic() - started):
                        do_kill()

        # Read on a thread of its own: a hung smpctl keeps its stdout open, and a read loop here
        # would wait with it for ever instead of calling it a hang (fifth stop: 12 minutes).
        reader_out = threading.Thread(target=read_events)
        reader_out.start()
        try:
            status = proc.wait(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            do_kill()
            status = proc.wait()
            self.crashes += 1
            self.note(f"CRASH (hang): smpctl {args[0]} still running after {PROCESS_TIMEOUT} s")
        reader_out.join()
        reader_err.join()
        err = "".join(stderr_text)
        self.killed_last = killed.is_set() and status == -signal.SIGKILL
        if killed.is_set() and status == -signal.SIGKILL:
            self.kills += 1
            self.note(f"smpctl {args[0]} killed -9 after {time.monotonic() - started:.3f} s, {len(lines)} lines")
            return None, lines, err
        if status < 0 or status == 70:
            self.crashes += 1
            self.note(f"CRASH: smpctl {args[0]} ended with status {status}: {err[-400:]}")
        else:
            said = [line for line in err.splitlines() if line.strip() and "developer mode" not in line]
            if not said and status != 0:  # --json: the error is the last event on stdout
                said = [line.strip() for line in lines if line.strip()][-1:]
            self.note(f"smpctl {' '.join(args[:2])}{' --ambiguous ' + args[-1] if '--ambiguous' in args else ''}"
                      f" -> {status} {said[-1][:200] if said else ''}")
        return status, lines, err

    def run(self, kill=None):
        return self.smpctl_run(["run", str(self.plan), "--device", self.link, "--operator", "soak", "--yes", "--json",
                                "--db", self.db, "--config", str(self.config)], kill)

    def resume(self, session_id, kill=None, skip=False):
        args = ["resume", str(session_id), "--device", self.link, "--operator", "soak", "--yes", "--json",
                "--db", self.db, "--config", str(self.config)]
        if skip:
            args += ["--ambiguous", self.decision]
        return self.smpctl_run(args, kill)

    # --- the record ---
    def statuses(self):
        """{session id: {dot id: status}} and {session id: state}, read-only."""
        if not os.path.exists(self.db):
            return {}, {}
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            try:
                states = dict(con.execute("SELECT id, state FROM session"))
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):  # killed before its first migration: nothing recorded
                    return {}, {}
                raise
            dots = {}
            for session, dot, status in con.execute("SELECT session_id, dot_id, status FROM dot"):
                dots.setdefault(session, {})[dot] = status
            return dots, states
        finally:
            con.close()

    def truth_lines(self):
        if not self.truth.exists():
            return []
        return [json.loads(line) for line in self.truth.read_text().splitlines() if line.strip()]

    def check_unrecorded(self):
        """After every smpctl process: no dot the simulator injected may be `planned`."""
        dots, _ = self.statuses()
        status = {}
        for session in sorted(dots):
            status.update(dots[session])
        for line in self.truth_lines():
            s = status.get(line["dot"], "planned")
            decided = line["dot"] in self.doubted
            if (s == "planned" and not (decided and self.decision == "redo")) or (s == "skipped" and not decided):
                if line["dot"] not in self.unrecorded:
                    self.note(f"UNRECORDED: dot {line['dot']} injected ({line['outcome']}), recorded {s}")
                self.unrecorded.add(line["dot"])

    def finish(self, first_status):
        """Resumes as an operator would until the session is complete; returns the session id."""
        status = first_status
        stopped_resumes = 0
        for attempt in range(MAX_RESUMES):
            self.check_unrecorded()
            dots, states = self.statuses()
            if not states:
                if attempt > 0 and status is not None and status != 0:
                    self.note("no session recorded and a fresh run failed")
                status, _, _ = self.run()
                continue
            session = min(states)
            state = states[session]
            if state == "completed":
                return session
            skip = status == 64 or (self.redo_refused and self.decision == "redo")
            if skip:
                self.doubted |= {d for d, s in dots[session].items() if s in IN_DOUBT}
            if self.redo_refused:
                # redo is refused on an applicator that has not rebooted: power-cycle it first
                self.power_cycle(same_seed=attempt % 2 == 0)
                self.redo_refused = False
            if state == "stopped" and status != 64:
                stopped_resumes += 1
            if (stopped_resumes >= 2 and status != 64) or (attempt >= 5 and status != 64):
                # a latched device (e-stop, fault) is not resumed (it is tried once): power-cycle it
                self.power_cycle(same_seed=attempt % 2 == 0)
                stopped_resumes = 0
            if status == 69:
                time.sleep(0.3)  # a disconnected link comes back after 0.5 s (disconnect-at)
            status, out, err = self.resume(session, skip=skip)
            # The refusal's reason: on stderr, or with --json in the `finished` event on stdout
            # (sixth stop: only stderr was read, and such a trial resumed for ever, unfinished).
            said = err + "".join(out)
            self.redo_refused = skip and self.decision == "redo" and status != 0 and "ower-cycle" in said
        self.check_unrecorded()
        _, states = self.statuses()
        return min(states) if states else None

    def verdict(self):
        """Compares the final record with the ground truth (the simulator stopped first)."""
        self.stop_sim()
        self.check_unrecorded()
        truth = self.truth_lines()
        per_dot = Counter(line["dot"] for line in truth)
        last = {line["dot"]: line for line in truth}
        dots, states = self.statuses()
        status = {}
        for session in sorted(dots):
            status.update(dots[session])
        double = redone = 0
        for dot, count in per_dot.items():
            if count > 1 and self.decision == "redo" and dot in self.doubted:
                redone += count - 1
            elif count > 1:
                double += count - 1
                self.note(f"DOUBLE: dot {dot} injected {count} times")
        wrong = 0
        for dot, s in status.items():
            if s == "done" and (dot not in last or last[dot]["outcome"] != "done"):
                wrong += 1
                self.note(f"WRONGLY SETTLED: dot {dot} recorded done, truth "
                          f"{last[dot]['outcome'] if dot in last else 'not injected'}")
        completed = bool(states) and all(s == "completed" for s in states.values())
        if not completed:
            self.note(f"UNFINISHED: sessions {states}")
        faults = sum(self.faults_injected.values())
        if "slow" in self.faults:
            faults += 1  # slow= applies to every dot: counted once
        return {
            "trial": self.name, "faults": self.faults, "dots_injected": len(truth),
            "faults_injected": faults, "double": double, "unrecorded": len(self.unrecorded),
            "wrong": wrong, "crashes": self.crashes, "redone": redone, "decision": self.decision, "unfinished": 0 if completed else 1,
            "kills": self.kills, "power_cycles": self.power_cycles, "cycles_after_kill": self.cycles_after_kill,
            "log": self.log,
        }


# --- the campaigns ---

def fault_trial(ctx, name, seed, spec):
    trial = Trial(ctx.work, name, ctx.smpctl, ctx.plan, ctx.config, seed, spec, "redo" if seed % 2 else "skip")
    if name.startswith("fault-delay-ack") and TIME_SCALE == "0":
        # With instant physics a DOT is done before its ACK leaves, and the DOT_DONE stands in for
        # it (§6.3), so there was no ACK left to delay (sixth stop: 0 of 10 trials). At x50 the
        # dots queue up and are acknowledged.
        trial.time_scale = "0.02"
    try:
        trial.start_sim(seed, spec)
        status, _, _ = trial.run()
        trial.finish(status)
    finally:
        result = trial.verdict()
    return "faults", result


def kill_trial(ctx, name, seed, phase, flavour):
    """flavour: "" (no faults), "link" (a link fault rate on), "device" (a device fault planned
    near where the kill is aimed: a latch, reset or contact loss then a kill, or the reverse)."""
    rng = random.Random(seed)
    spec = ""
    if flavour == "link":
        spec = FAULT_KINDS[rng.choice(["corrupt", "drop", "duplicate", "garbage", "delay-ack"])](rng, ctx.dots)
    elif flavour == "device":
        kind = rng.choice(["estop-at", "reset-at", "contact-loss-at", "over-depth-at", "disconnect-at", "stall-at"])
        spec = FAULT_KINDS[kind](rng, ctx.dots)
    trial = Trial(ctx.work, name, ctx.smpctl, ctx.plan, ctx.config, seed, spec, "redo" if seed % 2 else "skip")
    dots = ctx.dots

    def after_count(target, extra_seconds=0.0):
        due = {}

        def kill(event, elapsed):
            if "at" in due:
                return elapsed >= due["at"]
            if event and max(event.get("done_count", 0), event.get("done", 0)) >= target:
                due["at"] = elapsed + extra_seconds
                return extra_seconds == 0
            return False
        return kill

    target = rng.randint(1, dots - 1)
    if flavour == "device":
        kind, rest = spec.split("=", 1)
        near = max(1, min(dots, target + rng.randint(-40, 40)))
        spec = f"{kind}={near}" + (":" + rest.split(":")[1] if kind == "stall-at" else "")
        trial.faults = spec
    try:
        trial.start_sim(seed, spec)
        if phase == "handshake":
            # before the first dot: at a random time up to the preflight, or just after it
            limit = rng.uniform(0.0, 0.25)
            status, _, _ = trial.run(lambda event, elapsed: elapsed >= limit
                                     or (event is not None and event.get("event") in ("preflight", "armed")
                                         and rng.random() < 0.5))
        elif phase == "mid-stream":
            status, _, _ = trial.run(after_count(target))
        elif phase == "mid-commit":
            status, _, _ = trial.run(after_count(target, rng.uniform(0, 1.0)))
        else:  # resume: the run killed mid-stream, then its resume killed too
            target = target // 2 + 1
            status, _, _ = trial.run(after_count(target))
            _, states = trial.statuses()
            if states:
                trial.check_unrecorded()
                resume_phase = rng.random()
                if resume_phase < 0.3:
                    limit = rng.uniform(0.0, 0.2)
                    kill = lambda event, elapsed: elapsed >= limit  # noqa: E731 (during its handshake)
                else:
                    kill = after_count(rng.randint(target, dots - 1), rng.uniform(0, 0.25))
                status, _, _ = trial.resume(min(states), kill=kill)
        trial.finish(status)
    finally:
        result = trial.verdict()
    return "kill -9", result


def power_cycle_trial(ctx, name, seed, variant):
    """kill: smpctl killed mid-stream, power cycle, resume. resume: the same, and the first resume
    killed too before the power cycle. live: the simulator restarted under a running smpctl."""
    rng = random.Random(seed)
    trial = Trial(ctx.work, name, ctx.smpctl, ctx.plan, ctx.config, seed, "", "redo" if seed % 2 else "skip")
    # Aimed at most 60 % in: progress events are seconds apart at time scale 0, and a kill aimed
    # at the later dots often came with the run's last event, after it had finished (3 of 22
    # kill and resume trials missed at "anywhere", leaving 19 crash-then-power-cycle trials).
    latest = ctx.dots * 6 // 10
    target = rng.randint(1, latest)

    def at(count):
        return lambda event, elapsed: bool(event) and max(event.get("done_count", 0), event.get("done", 0)) >= count

    try:
        trial.start_sim(seed, "")
        if variant == "live":
            done = threading.Event()

            def cycle_when(event, elapsed):
                if event and max(event.get("done_count", 0), event.get("done", 0)) >= target and not done.is_set():
                    done.set()
                    trial.power_cycle(same_seed=rng.random() < 0.5)
                return False
            status, _, _ = trial.run(cycle_when)
        else:
            status, _, _ = trial.run(at(target))
            trial.check_unrecorded()
            # A loaded machine can end the run (held: lease expired) before the aimed count: the
            # crash then comes in a resume, so that every trial of this campaign has one.
            for _ in range(3):
                _, states = trial.statuses()
                if trial.killed_last or not states or all(s == "completed" for s in states.values()):
                    break
                status, _, _ = trial.resume(min(states), kill=at(rng.randint(target, max(target, latest))))
                trial.check_unrecorded()
            if variant == "resume":
                _, states = trial.statuses()
                if states:
                    status, _, _ = trial.resume(min(states), kill=at(rng.randint(target, max(target, latest))))
                    trial.check_unrecorded()
            trial.power_cycle(same_seed=rng.random() < 0.5)
        trial.finish(status)
    finally:
        result = trial.verdict()
    return "power cycle", result


class Context:
    pass


def build_plan(work, dots):
    plans = work / "plans"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench-make-plans.py"), str(plans)],
                   check=True, stdout=subprocess.DEVNULL)
    source = json.loads((plans / "bench-5k.json").read_text())
    if dots < len(source["dots"]):
        source["dots"] = source["dots"][:dots]
        source["plan_id"] = f"soak-{dots}"
    path = work / f"soak-{dots}.json"
    path.write_text(json.dumps(source, indent=1))
    return path, len(source["dots"])


def default_smpctl():
    out = subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True)
    return str(Path(out.stdout.strip()) / "smpctl")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smpctl", help="the smpctl binary (default: swift build's debug one)")
    parser.add_argument("--seeds", type=int, default=1 if QUICK else 10, help="seeds per fault kind")
    parser.add_argument("--combinations", type=int, default=2 if QUICK else 4,
                        help="random combinations of fault kinds per seed")
    parser.add_argument("--kills", type=int, default=4 if QUICK else 72, help="kill -9 trials")
    parser.add_argument("--power-cycles", type=int, default=3 if QUICK else 33,
                        help="power-cycle trials (33: 22 of them crash, power-cycle, resume)")
    parser.add_argument("--dots", type=int, default=300 if QUICK else 5000, help="plan size")
    parser.add_argument("--kinds", default="", help="only these fault kinds (comma-separated)")
    parser.add_argument("--jobs", type=int, default=2, help="trials at once")
    parser.add_argument("--work", default=str(ROOT / ".build-soak"), help="work directory")
    parser.add_argument("--seed", type=int, default=14, help="the soak's own seed")
    parser.add_argument("--time-scale", default="0",
                        help="the simulator's time scale in every trial (default 0, instant; at an "
                             "applicator's pace the host refills the queue a quarter at a time)")
    args = parser.parse_args()
    global TIME_SCALE
    TIME_SCALE = args.time_scale

    ctx = Context()
    ctx.smpctl = args.smpctl or default_smpctl()
    if not os.access(ctx.smpctl, os.X_OK):
        sys.exit(f"soak: no smpctl binary at {ctx.smpctl} (swift build first, or --smpctl)")
    ctx.work = Path(args.work).resolve()  # smpctl runs in the repository; paths must not depend on it
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.plan, ctx.dots = build_plan(ctx.work, args.dots)
    # The longest lease the protocol allows: two trials at once on a shared machine; a starved
    # host would (safely) let the applicator hold, which the soak handles but does not look for.
    ctx.config = ctx.work / "machine.toml"
    ctx.config.write_text("[envelope]\nlease_ms = 250\n")
    runs = ctx.work / "trials"

    rng = random.Random(args.seed)
    jobs = []
    kinds = [k for k in sorted(FAULT_KINDS) if not args.kinds or k in args.kinds.split(",")]
    for s in range(args.seeds):
        seed = 1000 + s
        for kind in kinds:
            jobs.append((fault_trial, f"fault-{kind}-{seed}", seed, FAULT_KINDS[kind](rng, ctx.dots)))
        for c in range(args.combinations):
            jobs.append((fault_trial, f"combo-{c}-{seed}", seed, combination(rng, ctx.dots)))
    phases = ["handshake", "mid-stream", "mid-commit", "resume"]
    flavours = ["", "link", "device"]
    for k in range(args.kills):
        phase, flavour = phases[k % 4], flavours[(k // 4) % 3]
        jobs.append((kill_trial, f"kill-{phase}{'-' + flavour if flavour else ''}-{k}", 5000 + k, phase, flavour))
    for p in range(args.power_cycles):
        variant = ("kill", "resume", "live")[p % 3]
        jobs.append((power_cycle_trial, f"power-cycle-{variant}-{p}", 9000 + p, variant))
    ctx.work = runs
    print(f"soak: {len(jobs)} trials, {ctx.dots}-dot plan, {args.jobs} at once, smpctl {ctx.smpctl}",
          file=sys.stderr, flush=True)

    started = time.monotonic()
    results = []
    lock = threading.Lock()

    def one(job):
        function, name, *rest = job
        campaign, result = function(ctx, name, *rest)
        with lock:
            results.append((campaign, result))
            bad = result["double"] + result["unrecorded"] + result["wrong"] + result["crashes"] + result["unfinished"]
            marks = [l for l in result["log"] if l.split(" ")[1] in ("CRASH", "CRASH:", "UNRECORDED:", "DOUBLE:", "WRONGLY", "UNFINISHED:")]
            print(f"soak: [{len(results)}/{len(jobs)}] {name} '{result['faults']}': "
                  f"{result['dots_injected']} injected, {result['kills']} killed, "
                  f"{result['power_cycles']} power cycles" + ("\n  *** " + "\n  *** ".join(marks) if bad else ""),
                  file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, jobs))
    elapsed = time.monotonic() - started

    rows = {}
    for campaign, r in results:
        row = rows.setdefault(campaign, Counter())
        row["trials"] += 1
        for key in ("dots_injected", "faults_injected", "double", "unrecorded", "wrong", "crashes",
                    "unfinished", "kills", "power_cycles", "cycles_after_kill", "redone"):
            row[key] += r[key]
    total = Counter()
    for row in rows.values():
        total.update(row)
    header = ("| campaign | trials | dots injected | faults injected | kill -9 | power cycles (after a kill) | "
              "redone by decision | double injections | unrecorded injections | wrongly settled | crashes | unfinished |")
    lines = [header, "|" + "---|" * 12]
    for campaign in ("faults", "kill -9", "power cycle"):
        if campaign in rows:
            r = rows[campaign]
            lines.append(f"| {campaign} | {r['trials']} | {r['dots_injected']:,} | {r['faults_injected']:,} | "
                         f"{r['kills']} | {r['power_cycles']} ({r['cycles_after_kill']}) | {r['redone']} | {r['double']} | {r['unrecorded']} | "
                         f"{r['wrong']} | {r['crashes']} | {r['unfinished']} |")
    t = total
    lines.append(f"| **all** | {t['trials']} | {t['dots_injected']:,} | {t['faults_injected']:,} | {t['kills']} | "
                 f"{t['power_cycles']} ({t['cycles_after_kill']}) | {t['redone']} | {t['double']} | {t['unrecorded']} | {t['wrong']} | {t['crashes']} | "
                 f"{t['unfinished']} |")
    table = "\n".join(lines)
    print(table)
    scale = "0 (delay-ack: 0.02)" if TIME_SCALE == "0" else TIME_SCALE
    print(f"soak: {t['trials']} trials in {elapsed:.0f} s ({ctx.dots}-dot plan, time scale {scale}, {args.jobs} at once)")
    (ctx.work / "table.md").write_text(table + "\n")
    with open(ctx.work / "trials.json", "w") as out:
        json.dump([r for _, r in results], out, indent=1)
    bad = t["double"] + t["unrecorded"] + t["wrong"] + t["crashes"] + t["unfinished"]
    if bad:
        print(f"soak: FAILED: see {ctx.work}/trials.json (every trial's log)", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
