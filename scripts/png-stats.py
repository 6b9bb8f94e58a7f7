#!/usr/bin/env python3
"""Pixel statistics of a PNG file, with the standard library only (zlib + struct).

Usage: scripts/png-stats.py FILE.png [--colour RRGGBB]... [--tolerance N]

Prints one JSON object: width, height, pixels, non_white (pixels with any channel below 250, alpha
taken over white), non_white_fraction, distinct_colours, and for each --colour the number of pixels
within --tolerance (default 24) of it on every channel ("colours") and the box those pixels lie in
("boxes": [min x, min y, max x, max y], absent when there are none). Used by the preview render test
(Tests/SessionRunnerTests/PreviewTests.swift) to check that Chromium drew something, in colour.

Supports 8-bit greyscale, grey+alpha, RGB and RGBA, non-interlaced (what Chromium writes).
Exit status 0, or 65 for a file that is not such a PNG.
"""
import json
import struct
import sys
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def fail(message):
    print(f"png-stats: {message}", file=sys.stderr)
    sys.exit(65)


def read_png(path):
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(SIGNATURE):
        fail(f"{path} is not a PNG file")
    offset = len(SIGNATURE)
    header = None
    compressed = bytearray()
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    if header is None:
        fail(f"{path} has no IHDR chunk")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in CHANNELS or interlace != 0:
        fail(f"{path}: unsupported PNG (bit depth {depth}, colour type {colour_type}, interlace {interlace})")
    channels = CHANNELS[colour_type]
    raw = zlib.decompress(bytes(compressed))
    stride = width * channels
    rows = []
    previous = bytearray(stride)
    position = 0
    for _ in range(height):
        kind = raw[position]
        row = bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        unfilter(kind, row, previous, channels)
        rows.append(row)
        previous = row
    return width, height, channels, rows


def unfilter(kind, row, previous, bpp):
    if kind == 0:
        return
    if kind == 1:
        for i in range(bpp, len(row)):
            row[i] = (row[i] + row[i - bpp]) & 0xFF
    elif kind == 2:
        for i in range(len(row)):
            row[i] = (row[i] + previous[i]) & 0xFF
    elif kind == 3:
        for i in range(len(row)):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(len(row)):
            a = row[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (row[i] + predictor) & 0xFF
    else:
        fail(f"unknown PNG filter type {kind}")


def rgb_pixels(width, channels, rows):
    """Yields (r, g, b), alpha composited over white."""
    for row in rows:
        for x in range(width):
            px = row[x * channels:(x + 1) * channels]
            if channels == 1:
                r = g = b = px[0]
                alpha = 255
            elif channels == 2:
                r = g = b = px[0]
                alpha = px[1]
            elif channels == 3:
                r, g, b = px
                alpha = 255
            else:
                r, g, b, alpha = px
            if alpha != 255:
                r = (r * alpha + 255 * (255 - alpha)) // 255
                g = (g * alpha + 255 * (255 - alpha)) // 255
                b = (b * alpha + 255 * (255 - alpha)) // 255
            yield r, g, b


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    path = argv[0]
    colours = []
    tolerance = 24
    index = 1
    while index < len(argv):
        if argv[index] == "--colour" and index + 1 < len(argv):
            text = argv[index + 1].lstrip("#")
            if len(text) != 6:
                fail(f"--colour wants RRGGBB, got {argv[index + 1]}")
            colours.append((text.upper(), tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))))
            index += 2
        elif argv[index] == "--tolerance" and index + 1 < len(argv):
            tolerance = int(argv[index + 1])
            index += 2
        else:
            fail(f"unknown argument {argv[index]}")
    width, height, channels, rows = read_png(path)
    non_white = 0
    counts = {name: 0 for name, _ in colours}
    distinct = set()
    boxes = {}
    for index, (r, g, b) in enumerate(rgb_pixels(width, channels, rows)):
        if r < 250 or g < 250 or b < 250:
            non_white += 1
        if len(distinct) < 100000:
            distinct.add((r, g, b))
        for name, (cr, cg, cb) in colours:
            if abs(r - cr) <= tolerance and abs(g - cg) <= tolerance and abs(b - cb) <= tolerance:
                counts[name] += 1
                x, y = index % width, index // width
                box = boxes.get(name)
                boxes[name] = [x, y, x, y] if box is None else [
                    min(box[0], x), min(box[1], y), max(box[2], x), max(box[3], y)]
    pixels = width * height
    print(json.dumps({
        "width": width, "height": height, "pixels": pixels, "non_white": non_white,
        "non_white_fraction": round(non_white / pixels, 6) if pixels else 0,
        "distinct_colours": len(distinct), "colours": counts, "boxes": boxes,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
