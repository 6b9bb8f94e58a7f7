#!/usr/bin/env python3
"""Generate the example plans in Examples/ (format smp-plan/1, see docs/plan-format.md).

    python3 scripts/make-examples.py            # writes Examples/*.json
    python3 scripts/make-examples.py --check    # fails if the committed files differ

Deterministic: fixed seeds, Python's own `random` (Mersenne Twister, stable across versions for
random()), coordinates rounded to the micrometre. Dots are placed by variable-radius Poisson-disc
(Bridson) sampling, so they are irregular like natural follicles and no two are closer than
MIN_SPACING_MM (checked again after rounding). Coordinates are the machine's, millimetres from the
centre of travel; these examples assume the head is registered with +y toward the forehead and +x
toward the client's right (seen from above).

Examples/invalid.json is written by hand below: one or more errors of every kind that can appear
in a file that is otherwise readable JSON (for `smpctl validate` demos and the tests).
"""

import json
import math
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "Examples"

MIN_SPACING_MM = 0.6   # the envelope's minimum is 0.5 mm; keep a margin
TRAVEL_MM = 150.0      # |x|, |y| limit of the built-in envelope


def bridson(rng, inside, radius, bounds, k=30):
    """Variable-radius Poisson-disc sampling.

    inside(x, y) -> bool, radius(x, y) -> minimum distance to earlier points (>= MIN_SPACING_MM),
    bounds = (xmin, ymin, xmax, ymax). A candidate is kept when every earlier point is at least
    radius(candidate) away, so every pair is >= the smallest radius apart.
    """
    xmin, ymin, xmax, ymax = bounds
    r_min = MIN_SPACING_MM
    r_max = 4.0
    cell = r_min / math.sqrt(2)  # at most one point per cell
    cols = int((xmax - xmin) / cell) + 1
    rows = int((ymax - ymin) / cell) + 1
    grid = {}
    points = []
    active = []

    def fits(x, y, r):
        if not (xmin <= x <= xmax and ymin <= y <= ymax) or not inside(x, y):
            return False
        cx, cy = int((x - xmin) / cell), int((y - ymin) / cell)
        reach = int(math.ceil(r / cell))
        for gx in range(max(cx - reach, 0), min(cx + reach + 1, cols)):
            for gy in range(max(cy - reach, 0), min(cy + reach + 1, rows)):
                j = grid.get((gx, gy))
                if j is not None:
                    px, py = points[j]
                    if (px - x) ** 2 + (py - y) ** 2 < r * r:
                        return False
        return True

    def add(x, y):
        grid[(int((x - xmin) / cell), int((y - ymin) / cell))] = len(points)
        points.append((x, y))
        active.append(len(points) - 1)

    # Seed from a few spread starting points so disconnected parts of a region fill too.
    for _ in range(2000):
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        if fits(x, y, radius(x, y)):
            add(x, y)
            if len(points) >= 8:
                break

    while active:
        slot = rng.randrange(len(active))
        px, py = points[active[slot]]
        r = radius(px, py)
        for _ in range(k):
            angle = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(r, 2 * r)
            x, y = px + dist * math.cos(angle), py + dist * math.sin(angle)
            rc = min(max(radius(x, y), r_min), r_max)
            if fits(x, y, rc):
                add(x, y)
                break
        else:
            active[slot] = active[-1]
            active.pop()
    return points


def serpentine(points, band_mm):
    """Order dots in bands front to back, alternating direction, to keep travel short."""
    top = max(y for _, y in points)

    def key(p):
        band = int((top - p[1]) / band_mm)
        return (band, p[0] if band % 2 == 0 else -p[0])

    return sorted(points, key=key)


def check(dots):
    """Brute-force (grid-assisted) re-check of spacing and travel after rounding."""
    cell = MIN_SPACING_MM
    grid = {}
    for d in dots:
        x, y = d["x_mm"], d["y_mm"]
        assert abs(x) <= TRAVEL_MM and abs(y) <= TRAVEL_MM, d
        cx, cy = math.floor(x / cell), math.floor(y / cell)
        for gx in (cx - 1, cx, cx + 1):
            for gy in (cy - 1, cy, cy + 1):
                for o in grid.get((gx, gy), ()):
                    dist = math.hypot(o["x_mm"] - x, o["y_mm"] - y)
                    assert dist >= MIN_SPACING_MM, (o, d, dist)
        grid.setdefault((cx, cy), []).append(d)
    ids = [d["id"] for d in dots]
    assert len(set(ids)) == len(ids)


def noise(rng, terms=4, amplitude=1.0, base_wavelength=40.0):
    """A smooth 1-D irregularity: a few sines with seeded phases."""
    waves = [(amplitude / (i + 1), 2 * math.pi / (base_wavelength / (i + 1)), rng.uniform(0, 2 * math.pi))
             for i in range(terms)]
    return lambda t: sum(a * math.sin(w * t + p) for a, w, p in waves)


def hairline():
    rng = random.Random(20250314)
    wobble = noise(rng, amplitude=1.2, base_wavelength=35.0)
    half_width = 55.0
    band = 12.0

    def front(x):
        # A gentle arc receding toward the temples, with a soft irregular wobble.
        return 95.0 - 0.004 * x * x + wobble(x)

    def depth_behind_front(x, y):
        return front(x) - y

    def inside(x, y):
        d = depth_behind_front(x, y)
        # The band narrows toward the temples.
        taper = band * (1.0 - 0.35 * (abs(x) / half_width) ** 2)
        return abs(x) <= half_width and 0.0 <= d <= taper

    def radius(x, y):
        # Densest at the front line, fading toward the back.
        return 1.4 + 0.15 * max(depth_behind_front(x, y), 0.0)

    points = bridson(rng, inside, radius, (-half_width, 95.0 - 0.004 * half_width ** 2 - band - 3, half_width, 98.0))
    points = serpentine(points, 3.0)

    dots = []
    for i, (x, y) in enumerate(points, start=1):
        d = depth_behind_front(x, y)
        dot = {"id": i, "x_mm": round(x, 3), "y_mm": round(y, 3)}
        if d < 2.0:
            dot["depth_mm"] = 0.5            # shallowest at the very edge: softer, lighter dots
            dot["dwell_ms"] = rng.choice([80, 90, 100])
        elif d > 8.0 and rng.random() < 0.3:
            dot["depth_mm"] = 0.7
        if 2.0 <= d and rng.random() < 0.1:
            dot["dwell_ms"] = rng.choice([100, 140, 160])
        dot["region"] = "hairline-front" if d < 4.0 else "hairline-transition"
        dots.append(dot)
    check(dots)
    return {
        "format": "smp-plan/1",
        "plan_id": "example-hairline-s1",
        "client": {"reference": "EXAMPLE-0001", "hair_transplant_date": "2024-03-02"},
        "session": {"number": 1, "of": 3, "date": "2025-03-14"},
        "defaults": {"depth_mm": 0.6, "dwell_ms": 120},
        "dots": dots,
    }


def crown():
    rng = random.Random(20250321)
    cx, cy = 4.0, -52.0
    a, b = 42.0, 38.0
    wobble = noise(rng, amplitude=0.04, base_wavelength=2 * math.pi / 3)

    def rho(x, y):
        return math.hypot((x - cx) / a, (y - cy) / b)

    def inside(x, y):
        angle = math.atan2(y - cy, x - cx)
        return rho(x, y) <= 1.0 + wobble(angle)

    def radius(x, y):
        # Slightly sparser toward the edge so the crown blends into untreated skin.
        return 0.71 + 0.18 * min(rho(x, y), 1.0) ** 2

    points = bridson(rng, inside, radius, (cx - a * 1.1, cy - b * 1.1, cx + a * 1.1, cy + b * 1.1))
    points = serpentine(points, 3.0)

    dots = []
    for i, (x, y) in enumerate(points, start=1):
        r = rho(x, y)
        dot = {"id": i, "x_mm": round(x, 3), "y_mm": round(y, 3)}
        if r > 0.85:
            dot["depth_mm"] = 0.7
            if rng.random() < 0.2:
                dot["dwell_ms"] = rng.choice([80, 100])
        elif r < 0.3 and rng.random() < 0.15:
            dot["depth_mm"] = rng.choice([0.9, 1.0])
        if r <= 0.85 and rng.random() < 0.05:
            dot["dwell_ms"] = rng.choice([180, 200])
        dot["region"] = "crown-centre" if r < 0.65 else "crown-edge"
        dots.append(dot)
    check(dots)
    return {
        "format": "smp-plan/1",
        "plan_id": "example-crown-s2",
        "client": {"reference": "EXAMPLE-0002"},
        "session": {"number": 2, "of": 3, "date": "2025-04-04"},
        "defaults": {"depth_mm": 0.8, "dwell_ms": 150},
        "dots": dots,
    }


def render(plan):
    """JSON with one dot per line, keys in the documented order."""
    lines = ["{"]
    for key in ("format", "plan_id", "client", "session", "defaults"):
        if key in plan:
            lines.append(f"  {json.dumps(key)}: {json.dumps(plan[key], ensure_ascii=False)},")
    lines.append('  "dots": [')
    body = [f"    {json.dumps(d, ensure_ascii=False)}" for d in plan["dots"]]
    lines.append(",\n".join(body))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


# One or more of every error a readable JSON file can carry. Kept as text, not built with
# json.dumps, because it needs a number (1e400) that Python would write as Infinity (not JSON).
INVALID = """{
  "format": "smp-plan/2",
  "plan_id": "  ",
  "notes": "unknown top-level key",
  "client": {"reference": "EXAMPLE-0003", "hair_transplant_date": "12/03/2024"},
  "session": {"number": 4, "of": 3, "date": "2025-02-30"},
  "design": {"design_id": "EXAMPLE-0003-course", "after": [{"plan_id": "EXAMPLE-0003-s1", "plan_sha256": "not-a-digest", "record_session": 0}]},
  "defaults": {"depth_mm": 0.7},
  "dots": [
    {"id": 1, "x_mm": 0, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 2, "x_mm": 1, "y_mm": 0, "depht_mm": 0.8, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 3, "x_mm": "2.0", "y_mm": 0, "dwell_ms": 120},
    {"id": 4, "x_mm": 3, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 5.5, "x_mm": 4, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 0, "x_mm": 5, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 4294967296, "x_mm": 6, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 1, "x_mm": 7, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 9, "x_mm": 8, "y_mm": 0, "region": "crown-centre"},
    {"id": 10, "x_mm": 9, "y_mm": 0, "depth_mm": 2.1, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 11, "x_mm": 10, "y_mm": 0, "depth_mm": 0.1, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 12, "x_mm": 11, "y_mm": 0, "dwell_ms": 900, "region": "crown-centre"},
    {"id": 13, "x_mm": 12, "y_mm": 0, "dwell_ms": 5, "region": "crown-centre"},
    {"id": 14, "x_mm": 151.2, "y_mm": 0, "dwell_ms": 120, "region": "crown-edge"},
    {"id": 15, "x_mm": 20, "y_mm": -160.5, "dwell_ms": 120, "region": "crown-edge"},
    {"id": 16, "x_mm": 30, "y_mm": 0, "depth_mm": 1e400, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 17, "x_mm": 31, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 18, "x_mm": 31.3, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 19, "x_mm": 31, "y_mm": 0, "dwell_ms": 120, "region": "crown-centre"},
    {"id": 20, "x_mm": 40, "y_mm": 0, "dwell_ms": 120, "region": ""},
    {"id": 21, "x_mm": 41, "y_mm": 0, "dwell_ms": 30, "region": "crown-centre"},
    {"id": 22, "x_mm": 42, "y_mm": 0, "dwell_ms": null, "region": "crown-centre"},
    {"id": 23, "x_mm": 43, "y_mm": 0, "dwell_ms": 120, "region": ["crown"]},
    {"id": 24, "x_mm": 44, "y_mm": 0, "depth_mm": 1.4, "dwell_ms": 120, "depth_mm": 0.6, "region": "crown-centre"},
    "not a dot"
  ]
}
"""


def main():
    outputs = {
        "hairline.json": render(hairline()),
        "crown.json": render(crown()),
        "invalid.json": INVALID,
    }
    if "--check" in sys.argv[1:]:
        stale = [name for name, text in outputs.items()
                 if not (EXAMPLES / name).exists() or (EXAMPLES / name).read_text(encoding="utf-8") != text]
        if stale:
            print("out of date:", ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    EXAMPLES.mkdir(exist_ok=True)
    for name, text in outputs.items():
        (EXAMPLES / name).write_text(text, encoding="utf-8")
        count = text.count('"id"')
        print(f"wrote Examples/{name} ({count} dots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
