#!/usr/bin/env python
"""The words of prose in each chapter notebook, as a table.

    python scripts/chapter_words.py                     # every notebook under book/, intro first
    python scripts/chapter_words.py book/02_amata.ipynb --markdown

Only Markdown cells count; code cells and outputs do not. Inside the Markdown, code
(fenced blocks and inline ``code``), math (``$...$``, ``$$...$$``, ``\\begin...\\end``),
HTML tags and comments, link targets, images, MyST directive options and the targets of
roles such as ``{cite}`` are not prose either; the text of a link or of a titled role
(``{doc}`Ch. 1 <01_minmax_pgd>```) is. A word is a run of letters or digits, with
inner apostrophes, hyphens and dots (``don't``, ``PGD-10``, ``0.3``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>[^\n]*)$")
# directives whose body is prose (an admonition, a figure's caption, ...); any other fenced block is code or math
PROSE_DIRECTIVES = re.compile(r"^\{(admonition|attention|caution|danger|error|hint|important|note|seealso|tip|"
                              r"warning|dropdown|figure|margin|sidebar|topic|epigraph|card|tab-item|glossary)\}")
REMOVE = [
    re.compile(r"<!--.*?-->", re.S),                     # HTML comments
    re.compile(r"\$\$.*?\$\$", re.S),                    # display math
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),
    re.compile(r"(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$"),  # inline math
    re.compile(r"`+[^`\n]*?`+(?!`)"),                    # inline code (roles are handled before)
    re.compile(r"!\[[^\]]*\]\([^)]*\)"),                 # images
    re.compile(r"<[^>\n]+>"),                            # HTML tags
    re.compile(r"https?://\S+"),                         # bare URLs
]
ROLE = re.compile(r"\{[\w:.-]+\}`([^`]*)`")
TITLED = re.compile(r"^(.*?)\s*<[^<>]*>$", re.S)
LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
LABEL = re.compile(r"^\s*\(\S+\)=\s*$", re.M)           # MyST targets (label)=
WORD = re.compile(r"[^\W_](?:[\w'’.-]*[^\W_])?")


def strip_fences(text: str) -> str:
    """Drop code/math fences; keep the body of prose directives, without their ``:option:`` lines."""
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # (closing fence, body is prose)
    for line in text.splitlines():
        m = FENCE.match(line)
        if m and stack and m.group("fence")[0] == stack[-1][0][0] and len(m.group("fence")) >= len(stack[-1][0]) \
                and not m.group("info").strip():
            stack.pop()
            continue
        if m and (not stack or stack[-1][1]):
            info = m.group("info").strip()
            stack.append((m.group("fence"), bool(PROSE_DIRECTIVES.match(info))))
            if stack[-1][1]:
                title = PROSE_DIRECTIVES.sub("", info).strip()
                if title and not info.startswith("{figure}"):
                    out.append(title)
            continue
        if stack and not stack[-1][1]:
            continue
        if stack and re.match(r"^\s*:[\w-]+:", line):
            continue
        out.append(line)
    return "\n".join(out)


def role_text(match: re.Match) -> str:
    body = match.group(1)
    titled = TITLED.match(body)
    if titled:
        return titled.group(1)
    name = match.group(0)[1:match.group(0).index("}")]
    return body if name in ("term", "abbr", "sub", "sup", "guilabel", "menuselection") else ""


def prose_words(markdown: str) -> int:
    """How many words of prose one Markdown cell holds."""
    text = strip_fences(markdown)
    text = LABEL.sub("", text)
    text = ROLE.sub(role_text, text)
    for pattern in REMOVE:
        text = pattern.sub(" ", text)
    text = LINK.sub(r"\1", text)
    return len(WORD.findall(text))


def title_of(cells: list[dict]) -> str:
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def count(path: Path) -> dict:
    """``{notebook, title, cells, words}`` of one notebook (``cells``: its Markdown cells)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    prose = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    try:
        name = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        name = str(path)
    return {"notebook": name, "title": title_of(cells), "cells": len(prose),
            "words": sum(prose_words(text) for text in prose)}


def table(rows: list[dict], markdown: bool = False) -> str:
    total = {"notebook": "total", "title": "", "cells": sum(r["cells"] for r in rows),
             "words": sum(r["words"] for r in rows)}
    head = ("notebook", "title", "prose cells", "words")
    body = [(r["notebook"], r["title"], str(r["cells"]), str(r["words"])) for r in [*rows, total]]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|"]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
                                  for cells in body]) + "\n"
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *map(fmt, body[:-1]), rule, fmt(body[-1])]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: every book/*.ipynb)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(BOOK.glob("*.ipynb"), key=lambda p: (p.stem != "intro", p.name))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"chapter_words: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    sys.stdout.write(table([count(p) for p in paths], markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
