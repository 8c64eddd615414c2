"""Render a .sched file highlighted by schedc's Pygments lexer to a PNG (docs/img/sched-highlight.png).

The lexer is looked up by name, as Sphinx and MkDocs do, so the image also shows that
the `pygments.lexers` entry point works. Needs Pillow (Pygments' ImageFormatter).

    .venv/bin/python tools/render_highlight.py [FILE.sched] [OUT.png] [--style NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pygments import highlight
from pygments.formatters import ImageFormatter
from pygments.lexers import get_lexer_by_name

ROOT = Path(__file__).resolve().parent.parent


def code_of(path: Path) -> str:
    """The file without its leading comment block (the example's usage notes)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=ROOT / "examples" / "spectral_line.sched")
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "img" / "sched-highlight.png")
    parser.add_argument("--style", default="friendly")
    args = parser.parse_args()
    formatter = ImageFormatter(style=args.style, font_name="DejaVu Sans Mono", font_size=15, line_numbers=True, line_pad=3, image_pad=14)
    png = highlight(code_of(args.source), get_lexer_by_name("sched"), formatter)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png)} bytes)")


if __name__ == "__main__":
    main()
