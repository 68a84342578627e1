#!/usr/bin/python3
"""Renders what `tmux capture-pane -e -p` printed (text with ANSI SGR colours)
as a PNG, for the README's screenshot of `clockprof top`. See
docs/developing.md ("Pictures") for the commands that make it.

Usage: terminal_png.py CAPTURE.txt OUT.png
Needs Debian's python3-pil and fonts-dejavu-core.
"""
import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 15
FG, BG = (220, 220, 220), (24, 24, 28)
# The 16 ANSI colours (xterm's defaults, a little softened).
BASIC = [
    (24, 24, 28), (205, 49, 49), (13, 188, 121), (229, 229, 16),
    (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
    (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
    (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
]


def xterm256(n):
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    level = 8 + (n - 232) * 10
    return (level, level, level)


def apply_sgr(params, state):
    codes = [int(p) if p else 0 for p in params.split(";")] if params else [0]
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            state.update(fg=FG, bg=BG, bold=False, reverse=False)
        elif c == 1:
            state["bold"] = True
        elif c == 22:
            state["bold"] = False
        elif c == 7:
            state["reverse"] = True
        elif c == 27:
            state["reverse"] = False
        elif 30 <= c <= 37:
            state["fg"] = BASIC[c - 30]
        elif 90 <= c <= 97:
            state["fg"] = BASIC[c - 90 + 8]
        elif 40 <= c <= 47:
            state["bg"] = BASIC[c - 40]
        elif 100 <= c <= 107:
            state["bg"] = BASIC[c - 100 + 8]
        elif c == 39:
            state["fg"] = FG
        elif c == 49:
            state["bg"] = BG
        elif c in (38, 48) and i + 1 < len(codes):
            key = "fg" if c == 38 else "bg"
            if codes[i + 1] == 5 and i + 2 < len(codes):
                state[key] = xterm256(codes[i + 2])
                i += 2
            elif codes[i + 1] == 2 and i + 4 < len(codes):
                state[key] = tuple(codes[i + 2 : i + 5])
                i += 4
        i += 1


def main(capture, out):
    regular = ImageFont.truetype(FONT, SIZE)
    bold = ImageFont.truetype(BOLD, SIZE)
    cell_w = round(regular.getlength("M"))
    cell_h = SIZE + 4
    lines = open(capture, encoding="utf-8", errors="replace").read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    cells = []  # (row, col, char, fg, bg, bold)
    width = 0
    state = dict(fg=FG, bg=BG, bold=False, reverse=False)
    for row, line in enumerate(lines):
        col = 0
        for token in re.split(r"(\x1b\[[0-9;]*[A-Za-z])", line):
            if token.startswith("\x1b["):
                if token.endswith("m"):
                    apply_sgr(token[2:-1], state)
                continue
            for ch in token:
                fg, bg = state["fg"], state["bg"]
                if state["reverse"]:
                    fg, bg = bg, fg
                cells.append((row, col, ch, fg, bg, state["bold"]))
                col += 1
        width = max(width, col)
    image = Image.new("RGB", (width * cell_w + 16, len(lines) * cell_h + 16), BG)
    draw = ImageDraw.Draw(image)
    for row, col, ch, fg, bg, is_bold in cells:
        x, y = 8 + col * cell_w, 8 + row * cell_h
        if bg != BG:
            draw.rectangle([x, y, x + cell_w, y + cell_h], fill=bg)
        if ch != " ":
            draw.text((x, y + 2), ch, font=bold if is_bold else regular, fill=fg)
    image.save(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
