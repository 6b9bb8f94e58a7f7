#!/usr/bin/env python3
"""What a terminal shows at the end of a `smpctl run` captured with script(1): applies the two
cursor commands ConsoleKit sends for the progress line (cursor up, erase line), drops colours and
the bare 0x03 the terminal echoes for Ctrl-C (smpctl turns ECHOCTL off: a terminal shows nothing).

    (sleep 3; printf '\\003'; sleep 2; printf '\\n') |
        script -q -e -c "smpctl run Examples/hairline.json --sim --time-scale 0.05 --yes" /dev/null |
        python3 scripts/screen-text.py
"""
import re
import sys

lines = [""]
text = sys.stdin.buffer.read().decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "")
for token in re.split(r"(\x1b\[[0-9;]*[A-Za-z]|\n)", text):
    if token == "\n":
        lines.append("")
    elif token == "\x1b[1A":
        if len(lines) > 1:
            lines.pop()
    elif token == "\x1b[2K":
        lines[-1] = ""
    elif token.startswith("\x1b["):
        continue  # colours
    else:
        lines[-1] += token.replace("\x03", "")
sys.stdout.write("\n".join(lines).rstrip("\n") + "\n")
