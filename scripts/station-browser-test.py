#!/usr/bin/env python3
"""The technician station in a real browser: one whole simulated session through the page.

Usage: scripts/station-browser-test.py --smpctl PATH [--chromium PATH] [--out DIR] [--plan FILE]
                                       [--time-scale X] [--timeout SECONDS]

Starts `smpctl run PLAN --sim --station --station-port 0 --json` (no --yes: the page arms it),
opens the station in headless Chromium driven over the DevTools protocol (--remote-debugging-pipe,
fds 3/4, NUL-delimited JSON; standard library only), and then, waiting for each condition with a
generous timeout and never asserting a duration:

  preflight shown -> Arm, confirmed -> dots fill in -> Hold -> the applicator says held (smpctl's
  own NDJSON: the `held` event and the device's STATUS `held`, not just the page) -> Resume,
  confirmed, refused while skin contact is lost (`smpctl sim-lines`), then taken -> a second page opened mid-session shows the done dots, and is closed -> the end summary and the report link -> the report served -> Ctrl-C closes the
  station; smpctl exits 0.

A screenshot is taken at each step into --out (station-1-preflight.png ... station-5-finished.png)
and checked for content: the DOM text at that moment, and scripts/png-stats.py says the image is
not blank and shows the map's colours. Exit status 0 passed, 1 failed (the reason on stderr),
77 no Chromium (the XCTest skips, or fails under SMP_REQUIRE_CHROMIUM=1).
"""
import argparse
import base64
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Failed(Exception):
    pass


class Smpctl:
    """smpctl's NDJSON events, read on a thread, kept in order."""

    def __init__(self, argv, env):
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
        self.events = []
        self.stderr = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line}
            with self.lock:
                self.events.append(event)

    def _read_stderr(self):
        for line in self.process.stderr:
            with self.lock:
                self.stderr.append(line)

    def count(self, name):
        with self.lock:
            return sum(1 for e in self.events if e.get("event") == name)

    def find(self, predicate):
        with self.lock:
            return next((e for e in self.events if predicate(e)), None)

    def tail(self):
        with self.lock:
            return "".join(self.stderr[-20:]) + "\n".join(json.dumps(e) for e in self.events[-8:])


class Browser:
    """Chromium over the DevTools pipe: one page, flattened session."""

    def __init__(self, chromium, profile):
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        def child_fds():
            # Through high numbers first: either end may itself be fd 3 or 4.
            high_r, high_w = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100
            os.dup2(to_browser_r, high_r)
            os.dup2(from_browser_w, high_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
             "--window-size=1024,720", "about:blank"],
            preexec_fn=child_fds, pass_fds=(3, 4), close_fds=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.out = os.fdopen(to_browser_w, "wb", buffering=0)
        self.inp = os.fdopen(from_browser_r, "rb", buffering=0)
        self.next_id = 0
        self.replies = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None

    def _read(self):
        buffer = b""
        while True:
            chunk = self.inp.read(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self.cond:
                        self.replies[message["id"]] = message
                        self.cond.notify_all()

    def call(self, method, params=None, session=True, timeout=60):
        with self.cond:
            self.next_id += 1
            ident = self.next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        self.out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.cond:
            while ident not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"Chromium did not answer {method}")
                self.cond.wait(left)
            reply = self.replies.pop(ident)
        if "error" in reply:
            raise Failed(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url):
        """Opens `url` in a new tab, which becomes the one driven; returns (target, session)."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1024, "height": 720, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})
        return target, self.session

    def close_tab(self, target):
        self.call("Target.closeTarget", {"targetId": target}, session=False)

    def js(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise Failed(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=10)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_for(what, condition, timeout, smpctl):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Failed as error:  # the page still loading (no body yet): ask again
            value, last_error = None, error
        if value:
            return value
        if smpctl.process.poll() is not None:
            raise Failed(f"smpctl exited ({smpctl.process.returncode}) while waiting for {what}:\n{smpctl.tail()}")
        time.sleep(0.2)
    raise Failed(f"timed out ({timeout} s) waiting for {what} (last page error: {last_error}):\n{smpctl.tail()}")


def check_png(path, colours):
    stats = json.loads(subprocess.run(
        [sys.executable, os.path.join(HERE, "png-stats.py"), path] + sum((["--colour", c] for c in colours), []),
        check=True, capture_output=True, text=True).stdout)
    if stats["non_white_fraction"] < 0.05 or stats["distinct_colours"] < 8:
        raise Failed(f"{path} looks blank: {stats}")
    for colour in colours:
        if stats["colours"][colour] < 20:
            raise Failed(f"{path}: hardly any #{colour} (the map's colour): {stats}")
    return stats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smpctl", required=True)
    parser.add_argument("--chromium")
    parser.add_argument("--out", default=None)
    parser.add_argument("--plan", default="Examples/hairline.json")
    parser.add_argument("--time-scale", default="0.3")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()

    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("station-browser-test: no chromium on PATH", file=sys.stderr)
        return 77
    work = tempfile.mkdtemp(prefix="smpctl-station-test-")
    out = args.out or work
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, XDG_DATA_HOME=work, XDG_RUNTIME_DIR=work)
    lines_socket = os.path.join(work, "lines.sock")
    smpctl = Smpctl([args.smpctl, "run", args.plan, "--sim", "--time-scale", args.time_scale, "--station",
                     "--station-port", "0", "--db", os.path.join(work, "records.sqlite"), "--json",
                     "--interlock-socket", lines_socket], env)

    def lines(*command):
        """The simulated interlock lines, as `smpctl sim-lines` from a second terminal."""
        subprocess.run([args.smpctl, "sim-lines", "--socket", lines_socket, *command], check=True,
                       capture_output=True, timeout=60)
    browser = None
    step = [0]

    def shot(name, text_expected, colours):
        step[0] += 1
        path = os.path.join(out, f"station-{step[0]}-{name}.png")
        browser.screenshot(path)
        text = browser.js("document.body.innerText")
        for expected in text_expected:
            if expected not in text:
                raise Failed(f"{path}: the page does not say {expected!r}:\n{text}")
        stats = check_png(path, colours)
        print(f"station-browser-test: {os.path.basename(path)}: {stats['width']}x{stats['height']}, "
              f"{stats['non_white_fraction']:.2f} non-white", file=sys.stderr)

    def click(element):
        if not browser.js(f"(() => {{ const b = document.getElementById('{element}'); "
                          f"if (!b || b.disabled || b.offsetParent === null) return false; b.click(); return true; }})()"):
            raise Failed(f"#{element} is not there to click")

    try:
        station = wait_for("the station's address", lambda: smpctl.find(lambda e: e.get("event") == "station"),
                           args.timeout, smpctl)
        url = station["url"]
        browser = Browser(chromium, os.path.join(work, "profile"))
        browser.open(url)

        phase = lambda: browser.js("document.body.dataset.phase || ''")
        wait_for("the preflight and its Arm question",
                 lambda: browser.js("document.body.dataset.question") == "arm"
                 and not browser.js("document.getElementById('arm').disabled"), args.timeout, smpctl)
        shot("preflight", ["Preflight", "E-stop", "hardware button"], ["B0BEC5"])
        if smpctl.find(lambda e: e.get("event") == "armed"):
            raise Failed("armed before the page confirmed")
        click("arm")
        wait_for("the arm confirmation", lambda: browser.js(
            "!document.getElementById('confirm-arm').classList.contains('hidden')"), 30, smpctl)
        click("arm-yes")
        wait_for("smpctl armed", lambda: smpctl.find(lambda e: e.get("event") == "armed"), args.timeout, smpctl)
        wait_for("dots filling in on the page", lambda: browser.js(
            "(() => { const m = /Done (\\d+) of/.exec(document.getElementById('progress').textContent);"
            " return m && +m[1] >= 5; })()"), args.timeout, smpctl)
        shot("running", ["running", "Done "], ["2E7D32", "B0BEC5"])

        def press_hold():
            # Held by the applicator itself before we press (lease expired on a loaded machine,
            # issue 15): resume through the page first; our Hold must be the one that holds.
            if phase() == "held":
                if not browser.js("document.getElementById('resume').disabled"):
                    print("station-browser-test: held by itself before Hold; resuming first", file=sys.stderr)
                    click("resume")
                    click("resume-yes")
                return False
            if phase() == "running" and not browser.js("document.getElementById('hold').disabled"):
                held_before[0] = smpctl.count("held")
                click("hold")
                return True
            return False

        held_before = [0]
        wait_for("the Hold button to press", press_hold, args.timeout, smpctl)
        wait_for("smpctl's held event", lambda: smpctl.count("held") > held_before[0],
                 args.timeout, smpctl)
        wait_for("the applicator's own STATUS: held", lambda: smpctl.find(
            lambda e: e.get("event") == "device" and e.get("state") == "held"), args.timeout, smpctl)
        wait_for("the page showing HELD and its Resume", lambda: phase() == "held"
                 and not browser.js("document.getElementById('resume').disabled"), args.timeout, smpctl)
        if smpctl.find(lambda e: e.get("event") == "finished"):
            raise Failed("the session finished instead of holding")
        shot("held", ["HELD", "Resume"], ["2E7D32", "B0BEC5"])

        # The page obeys the console's rules: no resume while skin contact is lost.
        lines("contact", "lose")
        click("resume")
        click("resume-yes")
        wait_for("the page saying what blocks the resume", lambda: "Cannot resume yet" in browser.js(
            "document.getElementById('blockers').textContent"), args.timeout, smpctl)
        if smpctl.find(lambda e: e.get("event") == "resumed"):
            raise Failed("resumed from the page while skin contact was lost")
        lines("contact", "restore")
        wait_for("the page showing every interlock healthy again", lambda: "not healthy" not in browser.js(
            "document.getElementById('inputs').textContent"), args.timeout, smpctl)
        click("resume")
        wait_for("the resume confirmation", lambda: browser.js(
            "!document.getElementById('confirm-resume').classList.contains('hidden')"), 30, smpctl)
        shot("resume-confirm", ["Resume the session?", "Resume now"], ["2E7D32"])
        click("resume-yes")
        wait_for("smpctl's resumed event", lambda: smpctl.find(lambda e: e.get("event") == "resumed"),
                 args.timeout, smpctl)

        # A second page opened mid-session gets the whole state first (the done dots among it);
        # closing it holds, resumes and ends nothing: the session goes on to the end.
        first = browser.session
        second, _ = browser.open(url)
        wait_for("the second page's map and progress", lambda: browser.js(
            "(() => { const m = /Done (\\d+) of/.exec(document.getElementById('progress').textContent);"
            " return m && +m[1] >= 5 && document.getElementById('conn').textContent !== 'connecting…'; })()"),
            args.timeout, smpctl)
        browser.close_tab(second)
        browser.session = first
        resumes = [0]

        def finished_or_resumed():
            # On a loaded machine the applicator can hold by itself (lease expired, issue 15) and
            # wait for the operator: the page's Resume is then pressed again, as a technician would.
            done = smpctl.find(lambda e: e.get("event") == "finished")
            if done:
                return done
            if phase() == "held" and not browser.js("document.getElementById('resume').disabled"):
                resumes[0] += 1
                print(f"station-browser-test: held again by itself ({smpctl.tail().splitlines()[-1:]}); resuming",
                      file=sys.stderr)
                if resumes[0] > 5:
                    raise Failed("held more than 5 times by itself")
                click("resume")
                click("resume-yes")
                time.sleep(1)
            return None

        finished = wait_for("the end", finished_or_resumed, args.timeout, smpctl)
        if finished.get("outcome") != "completed":
            raise Failed(f"the session did not complete: {finished}")
        wait_for("the end summary on the page", lambda: phase() == "finished" and browser.js(
            "!document.getElementById('summary').classList.contains('hidden')"
            " && !document.getElementById('report-link').classList.contains('hidden')"), args.timeout, smpctl)
        shot("finished", ["session ended", "Open the session's report"], ["2E7D32"])
        report_url = browser.js("document.getElementById('report-link').href")
        with urllib.request.urlopen(report_url, timeout=60) as response:
            report = response.read().decode()
        if "<svg" not in report or "done" not in report:
            raise Failed(f"the report at {report_url} has no dot map")
        if smpctl.process.poll() is not None:
            raise Failed("smpctl exited before Ctrl-C: the station should stay up after the end")
        smpctl.process.send_signal(signal.SIGINT)
        try:
            status = smpctl.process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            raise Failed("smpctl did not exit after Ctrl-C")
        if status != 0:
            raise Failed(f"smpctl exited {status}:\n{smpctl.tail()}")
        print(f"station-browser-test: passed; screenshots in {out}", file=sys.stderr)
        return 0
    except Failed as failure:
        print(f"station-browser-test: FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if browser:
            browser.close()
        if smpctl.process.poll() is None:
            smpctl.process.kill()
            smpctl.process.wait()
        if out != work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
