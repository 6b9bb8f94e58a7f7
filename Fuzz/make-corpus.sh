#!/usr/bin/env bash
# Seeds the fuzz corpus with the golden frames of firmware-protocol.md §8 (one file per frame,
# plus one file with all of them back to back).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p Fuzz/corpus
python3 - <<'PY'
import re, pathlib
text = pathlib.Path("firmware-protocol.md").read_text()
section = text.split("<!-- golden:begin -->")[1].split("<!-- golden:end -->")[0]
allbytes = b""
for line in section.splitlines():
    parts = line.split("`")
    if len(parts) < 6: continue
    name = re.sub(r"[^A-Za-z0-9]+", "-", parts[1]).strip("-").lower()
    data = bytes(int(h, 16) for h in parts[5].split())
    allbytes += data
    pathlib.Path(f"Fuzz/corpus/{name}").write_bytes(data)
pathlib.Path("Fuzz/corpus/all-frames").write_bytes(allbytes)
PY
