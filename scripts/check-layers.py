#!/usr/bin/env python3
"""The module map of docs/architecture.md, checked: dependencies point one way.

Reads the package manifest (`swift package dump-package`, well under a second) and fails when a
library reaches, directly or through another module, something its layer must not: the session
linking GRDB, TOMLKit or Crypto; the driver or the session importing the simulator; the firmware
core or the codec depending on anything but the codec. Also fails when a library gives an
outcome an exit-status number: those live in the CLI's ExitStatus only.
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWIFT = os.environ.get("SWIFT", "swift")

# target -> what it must never reach (targets or package products), directly or transitively.
FORBIDDEN = {
    "FirmwareProtocol": {"*"},
    "FirmwareCore": {"*except FirmwareProtocol"},
    "SMPSystem": {"*except CSMPShim CGPIOD SystemPackage"},
    "NeedleDriver": {"DeviceSim", "FirmwareCore", "SessionRunner", "SMPInterlocks", "GRDB", "TOMLKit", "Crypto"},
    "SMPInterlocks": {"DeviceSim", "NeedleDriver", "SessionRunner", "GRDB", "TOMLKit", "Crypto"},
    "SMPPlan": {"NeedleDriver", "DeviceSim", "GRDB", "TOMLKit", "Crypto"},
    "SessionRunner": {"DeviceSim", "GRDB", "TOMLKit", "Crypto", "SMPRecords", "SMPMachine", "SMPPlanReader"},
    "SMPRecords": {"DeviceSim", "TOMLKit"},
    "SMPMachine": {"DeviceSim", "SessionRunner", "GRDB"},
    "SMPRender": {"DeviceSim", "TOMLKit"},
    "SMPDesign": {"DeviceSim", "FirmwareCore", "NeedleDriver", "GRDB", "TOMLKit", "SessionRunner", "SMPRecords", "SMPMachine", "Hummingbird"},
    # The station sees the session through its events; the records and the machine file stay the CLI's.
    "SMPStation": {"DeviceSim", "FirmwareCore", "GRDB", "TOMLKit", "Crypto", "SMPRecords", "SMPMachine", "SMPRender"},
}

# The web server (swift-nio underneath) is the station's alone: no other library links it.
for _name in ("NeedleDriver", "SMPInterlocks", "SMPPlan", "SessionRunner", "SMPRecords", "SMPMachine", "SMPRender"):
    FORBIDDEN[_name] |= {"Hummingbird", "HummingbirdWebSocket"}


def main() -> int:
    dump = subprocess.run([SWIFT, "package", "--package-path", ROOT, "dump-package"],
                          check=True, capture_output=True, text=True).stdout
    targets = {t["name"]: t for t in json.loads(dump)["targets"]}

    def direct(name):
        if name not in targets:
            return []  # a package product
        out = []
        for dep in targets[name].get("dependencies", []):
            kind, value = next(iter(dep.items()))
            out.append(value[0])
        return out

    def closure(name):
        seen, stack = set(), list(direct(name))
        while stack:
            dep = stack.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in targets:
                stack.extend(direct(dep))
        return seen

    failures = []
    for name, forbidden in FORBIDDEN.items():
        if name not in targets:
            continue
        reached = closure(name)
        if "*" in forbidden and reached:
            failures.append(f"{name} must depend on nothing; it reaches {sorted(reached)}")
            continue
        allowed_only = [a for f in forbidden if f.startswith("*except ") for a in f.split()[1:]]
        if allowed_only:
            extra = reached - set(allowed_only)
            if extra:
                failures.append(f"{name} may reach only {allowed_only}; it reaches {sorted(extra)}")
            continue
        for bad in sorted(forbidden & reached):
            failures.append(f"{name} reaches {bad} (through {sorted(d for d in direct(name) if d == bad or bad in closure(d))})")

    # Exit-status numbers belong to the CLI (Sources/smpctl/ExitStatus.swift).
    pattern = re.compile(r"\b(exitCode|ExitCode\(|exit\()")
    for module in sorted(os.listdir(os.path.join(ROOT, "Sources"))):
        if module == "smpctl":
            continue
        folder = os.path.join(ROOT, "Sources", module)
        for dirpath, _, files in os.walk(folder):
            for file in files:
                if not file.endswith(".swift"):
                    continue
                path = os.path.join(dirpath, file)
                for number, line in enumerate(open(path, encoding="utf-8"), 1):
                    if pattern.search(line.split("//")[0]):
                        failures.append(f"{os.path.relpath(path, ROOT)}:{number}: exit status in a library: {line.strip()}")

    if failures:
        print("check-layers: the module map is broken (docs/architecture.md):", file=sys.stderr)
        for failure in failures:
            print("  " + failure, file=sys.stderr)
        return 1
    print(f"check-layers: {len(targets)} targets, dependencies point one way, exit statuses only in the CLI")
    return 0


if __name__ == "__main__":
    sys.exit(main())
