#!/usr/bin/env python3
"""Generate the plans the benchmarks run (make bench; docs/performance.md).

    python3 scripts/bench-make-plans.py OUTDIR

writes, deterministically (fixed seeds), unless already there with the same generator version:

  bench-200k.json   200,000 dots, irregular (a jittered hexagonal lattice), no two closer than
                    0.61 mm, over the whole travel of the built-in envelope (a rounded square
                    296 mm across: 200,000 dots at >= 0.6 mm need at least ~62,000 mm^2 even
                    packed hexagonally, more than a scalp's worth), serpentine order, regions,
                    some dots with their own depth or dwell: plan load and peak memory.
  bench-20k.json    its first 20,000 dots (serpentine order, so travel between dots is short):
                    the full-path and underrun benchmarks.
  bench-5k.json     its first 5,000 dots: the link benchmark (a 115200-baud run takes ~45 s).
  bench-paced.json  200 dots 1 mm apart, dwell 50 ms: with travel 20 ms (1 mm at the simulator's
                    50 mm/s) and descend + retract 30 ms, one dot per ~100 ms = ~10 dots/s at
                    time scale 1 (a ~20 s session): the host-CPU benchmark.

Why not the Poisson-disc sampler of scripts/make-examples.py: see jittered_hex(). Its
serpentine ordering and spacing check are reused (imported from there).
"""

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

VERSION = 4
ROOT = Path(__file__).resolve().parent.parent
SPACING_MM = 0.6
DOTS = 200_000


def examples_module():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "scripts" / "make-examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jittered_hex(rng, inside, pitch, jitter, bounds):
    """Irregular points no two closer than pitch - 2 * jitter: a hexagonal lattice of the given
    pitch, turned by a random angle, each point moved by a random offset of up to `jitter` in a
    random direction. Why not the Poisson-disc sampler of scripts/make-examples.py: it packs about
    1.65 dots/mm^2 at 0.6 mm, so 200,000 dots would need ~121,000 mm^2, more than the whole
    300 x 300 mm travel of the built-in envelope; this packs 2.50 dots/mm^2 at pitch 0.68 mm."""
    xmin, ymin, xmax, ymax = bounds
    turn = rng.uniform(0, math.pi / 3)
    c, s = math.cos(turn), math.sin(turn)
    row_step = pitch * math.sqrt(3) / 2
    reach = int(math.hypot(xmax - xmin, ymax - ymin) / pitch) + 2
    points = []
    for j in range(-reach, reach + 1):
        v = j * row_step
        shift = (j % 2) * pitch / 2
        for i in range(-reach, reach + 1):
            u = i * pitch + shift
            x, y = u * c - v * s, u * s + v * c
            if not (xmin <= x <= xmax and ymin <= y <= ymax):
                continue
            angle = rng.random() * 2 * math.pi
            dist = jitter * math.sqrt(rng.random())
            x, y = x + dist * math.cos(angle), y + dist * math.sin(angle)
            if xmin <= x <= xmax and ymin <= y <= ymax and inside(x, y):
                points.append((x, y))
    return points


def scalp_plan():
    rng = random.Random(20251125)
    half = 148.0   # mm; within the built-in +-150 mm travel

    def inside(x, y):
        # The corners rounded off, so the area reads as a head seen from above rather than a square.
        return (abs(x) / half) ** 4 + (abs(y) / half) ** 4 <= 1.0

    # pitch 0.68, jitter 0.035: no two dots closer than 0.61 mm, even after rounding to 1 um.
    points = jittered_hex(rng, inside, 0.68, 0.035, (-half, -half, half, half))
    if len(points) < DOTS:
        raise SystemExit(f"only {len(points)} dots fit; enlarge the area")
    points = rng.sample(points, DOTS)
    ex = examples_module()
    points = ex.serpentine(points, 3.0)
    dots = []
    for i, (x, y) in enumerate(points, start=1):
        dot = {"id": i, "x_mm": round(x, 3), "y_mm": round(y, 3)}
        roll = rng.random()
        if roll < 0.10:
            dot["depth_mm"] = rng.choice([0.5, 0.7, 0.9])
        elif roll < 0.15:
            dot["dwell_ms"] = rng.choice([100, 140, 160])
        dot["region"] = "front" if y > 60 else ("crown" if y < -40 else "mid")
        dots.append(dot)
    ex.check(dots)
    return {
        "format": "smp-plan/1",
        "plan_id": "bench-200k",
        "client": {"reference": "BENCH-0001"},
        "session": {"number": 1, "of": 1},
        "defaults": {"depth_mm": 0.6, "dwell_ms": 120},
        "dots": dots,
    }


def paced_plan():
    # 200 dots, 1 mm apart on a serpentine line: 10 rows of 20.
    dots = []
    i = 0
    for row in range(10):
        cols = range(20) if row % 2 == 0 else range(19, -1, -1)
        for col in cols:
            i += 1
            dots.append({"id": i, "x_mm": float(col), "y_mm": float(row), "region": "paced"})
    return {
        "format": "smp-plan/1",
        "plan_id": "bench-paced-10hz",
        "defaults": {"depth_mm": 0.6, "dwell_ms": 50},
        "dots": dots,
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "VERSION"
    names = ["bench-200k.json", "bench-20k.json", "bench-5k.json", "bench-paced.json"]
    if stamp.exists() and stamp.read_text().strip() == str(VERSION) and all((out / n).exists() for n in names):
        print(f"plans in {out} are up to date", file=sys.stderr)
        return 0
    ex = examples_module()
    big = scalp_plan()
    (out / "bench-200k.json").write_text(ex.render(big), encoding="utf-8")
    small = dict(big, plan_id="bench-20k", dots=big["dots"][:20_000])
    (out / "bench-20k.json").write_text(ex.render(small), encoding="utf-8")
    smaller = dict(big, plan_id="bench-5k", dots=big["dots"][:5_000])
    (out / "bench-5k.json").write_text(ex.render(smaller), encoding="utf-8")
    (out / "bench-paced.json").write_text(ex.render(paced_plan()), encoding="utf-8")
    stamp.write_text(f"{VERSION}\n")
    for n in names:
        print(f"wrote {out / n} ({(out / n).stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
