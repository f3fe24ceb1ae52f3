"""Checks on the book's sources that need no build."""
import json
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
