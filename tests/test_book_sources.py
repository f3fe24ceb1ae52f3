"""Checks on the book's sources that need no build."""
import json
import re
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"


def markdown_sources():
    for path in sorted(BOOK.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                yield path.name, "".join(cell["source"])
    for path in sorted(BOOK.glob("*.md")):
        yield path.name, path.read_text()


def test_no_top_for_the_transpose():
    """MathJax's offline CHTML fonts draw \\top as a broken glyph in Chromium (seen in the optimal-control
    chapter's H = p^T F); the chapters write the transpose as ^\\mathsf{T}."""
    bad = [name for name, text in markdown_sources() if "\\top" in text]
    assert not bad, f"\\top in {bad}: write ^\\mathsf{{T}}"


def code_sources():
    for path in sorted(BOOK.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                yield path.name, "".join(cell["source"])


def test_no_chapter_switches_on_the_test_suites_environment():
    """CI exports AMATA_MNIST for the library's MNIST tests; a chapter that read it switched itself to MNIST
    under nbval and ran past the 2000 s cell timeout (CI of 2026-12-07). Chapters opt in with their own
    variable (AMATA_CHAPTER_DATA) instead."""
    reads = re.compile(r"""(environ\.get\(|environ\[|getenv\()\s*["']AMATA_MNIST""")
    assert reads.search('os.environ.get("AMATA_MNIST")') and not reads.search("# load reads AMATA_MNIST")
    bad = [name for name, text in code_sources() if reads.search(text)]
    assert not bad, f"{bad} read AMATA_MNIST: use AMATA_CHAPTER_DATA to opt in"
