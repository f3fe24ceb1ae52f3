"""The chapters' opening box (amata_lib.book.scaffold) and the prose word count (scripts/chapter_words.py)."""
import json
from pathlib import Path

import pytest

from amata_lib.book.scaffold import ChapterBox, chapter_box, running_time
from amata_lib.infra.errors import UserError
from scripts import chapter_words  # the repository root is on sys.path (its conftest.py)

ROOT = Path(__file__).resolve().parents[1]


BOX = dict(learn=["why PGD-$K$ costs $K + 1$ passes", "how `Amata` anneals $K_t$"],
           need=["01_minmax_pgd", ("02_amata.ipynb", "the schedule"), ("notation.md", "the notation"),
                 "basic PyTorch"],
           minutes=2.25)


# --------------------------------------------------------------------------- chapter_box
def test_the_box_is_the_markdown_of_its_arguments():
    assert chapter_box(**BOX).markdown() == (
        "> **In this chapter you will learn**\n"
        ">\n"
        "> - why PGD-$K$ costs $K + 1$ passes\n"
        "> - how `Amata` anneals $K_t$\n"
        ">\n"
        "> **You need:** [Chapter 1](01_minmax_pgd.ipynb), [Chapter 2, the schedule](02_amata.ipynb), "
        "[the notation](notation.md), basic PyTorch\n"
        ">\n"
        "> **Running time:** about 2.2 min on 2 CPU cores (measured when its outputs were stored)\n")


def test_the_box_is_the_same_every_time_and_times_nothing(monkeypatch):
    import time

    first = chapter_box(**BOX)
    monkeypatch.setattr(time, "time", lambda: 0.0)
    monkeypatch.setattr(time, "perf_counter", lambda: 0.0)
    again = chapter_box(**BOX)
    assert again == first and again.markdown() == first.markdown() and repr(again) == repr(first)


def test_jupyter_shows_markdown_and_no_html():
    box = chapter_box(**BOX)
    assert box._repr_markdown_() == box.markdown()
    assert not hasattr(box, "_repr_html_")  # text/html would win over the Markdown in Jupyter and in the book
    assert repr(box).splitlines() == [
        "You will learn:", "  - why PGD-$K$ costs $K + 1$ passes", "  - how `Amata` anneals $K_t$",
        "You need: Chapter 1; Chapter 2, the schedule; the notation; basic PyTorch",
        "Running time: about 2.2 min on 2 CPU cores"]


def test_ipython_displays_the_markdown():
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(chapter_box(**BOX))
    assert data["text/markdown"] == chapter_box(**BOX).markdown()
    assert "text/html" not in data


def test_no_prerequisite_and_other_cores():
    box = chapter_box(learn=["the min-max problem"], minutes=0.5, cores=4)
    assert "> **You need:** no earlier chapter\n" in box.markdown()
    assert "about 30 s on 4 CPU cores" in box.markdown()


@pytest.mark.parametrize("minutes, text", [(0.01, "about 1 s"), (0.5, "about 30 s"), (1, "about 1 min"),
                                           (2.25, "about 2.2 min"), (12.04, "about 12 min"), (90, "about 90 min")])
def test_running_time(minutes, text):
    assert running_time(minutes) == text


@pytest.mark.parametrize("kwargs, message", [
    (dict(learn=[], minutes=1), "learn must be a non-empty list"),
    (dict(learn="one string", minutes=1), "learn must be a non-empty list"),
    (dict(learn=["a\nb"], minutes=1), "must be one line"),
    (dict(learn=[""], minutes=1), "non-empty string"),
    (dict(learn=["x"], need="01_minmax_pgd", minutes=1), "need must be a list"),
    (dict(learn=["x"], need=[("01_minmax_pgd",)], minutes=1), "(target, text)"),
    (dict(learn=["x"], need=[("https://example.org", "a site")], minutes=1), "a chapter (02_amata) or a book page"),
    (dict(learn=["x"], minutes=0), "more than 0"),
    (dict(learn=["x"], minutes=True), "minutes must be"),
    (dict(learn=["x"], minutes="2"), "minutes must be"),
    (dict(learn=["x"], minutes=1, cores=0), "cores must be a positive integer"),
])
def test_bad_arguments_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        chapter_box(**kwargs)


def test_the_box_parses_as_one_quote_with_the_links():
    """What the book's MyST parser makes of it: one quote block, a bullet per item, a link per linked need."""
    pytest.importorskip("myst_parser")
    from docutils import nodes
    from docutils.core import publish_doctree
    from myst_parser.parsers.docutils_ import Parser

    tree = publish_doctree(chapter_box(**BOX).markdown(), parser=Parser(),
                           settings_overrides={"myst_enable_extensions": ["dollarmath"],
                                               "myst_all_links_external": True, "report_level": 5})
    (quote,) = [n for n in tree.children if not isinstance(n, nodes.system_message)]
    assert isinstance(quote, nodes.block_quote)
    assert len(list(quote.findall(nodes.list_item))) == 2
    assert len(list(quote.findall(nodes.math))) == 3
    assert not list(tree.findall(nodes.problematic))
    links = [r["refuri"] for r in quote.findall(nodes.reference)]
    assert links == ["01_minmax_pgd.ipynb", "02_amata.ipynb", "notation.md"]


def test_the_box_is_a_frozen_value():
    box = chapter_box(**BOX)
    assert isinstance(box, ChapterBox)
    with pytest.raises(AttributeError):
        box.minutes = 1


# --------------------------------------------------------------------------- chapter_words
def _notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": kind, "metadata": {}, "source": text,
                     **({"outputs": [], "execution_count": None} if kind == "code" else {})}
                    for kind, text in cells]}
    path.write_text(json.dumps(nb))
    return path


@pytest.mark.parametrize("markdown, words", [
    ("# A title\n\nTwo words.", 4),
    ("The step $\\alpha_t = \\tau / K_t$ shrinks.", 3),
    ("$$\nK_t = \\lceil k \\rceil\n$$\nafter", 1),
    ("\\begin{align}\na &= b\n\\end{align} done", 1),
    ("Call `pgd(model, x, y)` now.", 2),
    ("```python\nimport torch\nx = 1\n```\nafter the code", 3),
    ("See [the paper](https://example.org/paper.pdf) and ![a figure](fig.png).", 4),
    ("As {cite}`ye2021amata` showed in {doc}`Chapter 1 <01_minmax_pgd>`.", 5),
    ("A {term}`schedule` and {numref}`fig-k`.", 3),
    (":::{note}\n:class: dropdown\nInside a note.\n:::", 3),
    ("```{figure} fig.png\n:name: fig-k\n\nThe caption.\n```", 2),
    ("<div class=\"x\">Boxed</div> <!-- a comment -->", 1),
    ("(sec-label)=\n## Heading", 1),
    ("| K | cost |\n|---|---|\n| 10 | 11 |", 4),
    ("PGD-10 isn't 0.3 robust_acc", 4),
])
def test_prose_words(markdown, words):
    assert chapter_words.prose_words(markdown) == words


def test_only_markdown_cells_count(tmp_path):
    path = _notebook(tmp_path / "03_x.ipynb", [("markdown", "# The title\n\nFour words of prose."),
                                              ("code", "print('not prose at all')"),
                                              ("markdown", "Two more.")])
    assert chapter_words.count(path) == {"notebook": str(path), "title": "The title", "cells": 2, "words": 8}


def test_the_table(tmp_path, capsys):
    a = _notebook(tmp_path / "01_a.ipynb", [("markdown", "# A | B\n\none two")])
    b = _notebook(tmp_path / "02_b.ipynb", [("markdown", "# B\n\nthree"), ("code", "x = 1")])
    assert chapter_words.main([str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["notebook", "title", "prose", "cells", "words"]
    assert lines[2].split()[-2:] == ["1", "4"] and lines[3].split()[-2:] == ["1", "2"]  # titles count
    assert lines[-1].split() == ["total", "2", "6"]
    assert chapter_words.main([str(a), "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| notebook | title | prose cells | words |" and out[2].endswith("| A \\| B | 1 | 4 |")
    assert out[-1] == "| total |  | 1 | 4 |"


def test_a_missing_notebook_is_one_line(tmp_path, capsys):
    assert chapter_words.main([str(tmp_path / "nope.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_every_chapter_of_the_book_is_counted():
    rows = [chapter_words.count(p) for p in sorted((ROOT / "book").glob("*.ipynb"))]
    assert rows and all(r["words"] > 0 and r["title"] for r in rows)
