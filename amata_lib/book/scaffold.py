"""The box a chapter opens with: what you will learn, what you need, and how long the chapter runs.

A chapter's first code cell ends with the box, so Jupyter and the HTML book show it::

    from amata_lib.book.scaffold import chapter_box

    chapter_box(
        learn=["why PGD-$K$ costs $K + 1$ passes per minibatch", "how Amata anneals $K_t$"],
        need=["01_minmax_pgd", ("notation.md", "the notation table"), "basic PyTorch"],
        minutes=1.5,
    )

The box is Markdown (a quote block): Jupyter renders it, and Jupyter Book renders the same
text as MyST (``nb_render_markdown_format: myst`` in _config.yml), where a link to a chapter's
``.ipynb`` becomes a link to its page and a chapter that does not exist fails the build. It
has no HTML twin on purpose: a ``text/html`` output would win over the Markdown in both places,
and raw HTML links cannot point to the notebook in Jupyter and to the page in the book at once.

The running time is the one the chapter's author measured on the book's 2-core CPU and
wrote in the call; nothing is timed here, so the output is the same on every machine and
strict nbval compares it like any other output.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..infra.errors import UserError

CHAPTER = re.compile(r"^(\d{2})_[A-Za-z0-9_]+(\.ipynb)?$")
PAGE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.(ipynb|md)$")


def _one_line(kind: str, item: object) -> str:
    if not isinstance(item, str) or not item.strip():
        raise UserError(f"chapter_box: every {kind} item must be a non-empty string, got {item!r}")
    if "\n" in item:
        raise UserError(f"chapter_box: a {kind} item must be one line (it is one bullet), got {item!r}")
    return item.strip()


def _need(item: object) -> str:
    """One prerequisite as Markdown: a link to a chapter or page, or the text as it is."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise UserError(f"chapter_box: a linked need is (target, text), got {item!r}")
        target, text = (_one_line("need", part) for part in item)
        chapter = CHAPTER.match(target)
        if chapter:
            return f"[Chapter {int(chapter.group(1))}, {text}]({target.removesuffix('.ipynb')}.ipynb)"
        if not PAGE.match(target):
            raise UserError(f"chapter_box: a need's target is a chapter (02_amata) or a book page ending in "
                            f".ipynb or .md, got {target!r}")
        return f"[{text}]({target})"
    text = _one_line("need", item)
    chapter = CHAPTER.match(text)
    if chapter:
        return f"[Chapter {int(chapter.group(1))}]({text.removesuffix('.ipynb')}.ipynb)"
    return text


def running_time(minutes: float) -> str:
    """``0.5 -> "about 30 s"``, ``2.25 -> "about 2.2 min"``: the measured time as the box writes it."""
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < 24 * 60:
        raise UserError(f"chapter_box: minutes must be a measured running time in minutes, "
                        f"more than 0 and less than a day, got {minutes!r}")
    if minutes < 1:
        return f"about {max(1, round(minutes * 60))} s"
    return f"about {round(minutes, 1):g} min"


@dataclass(frozen=True)
class ChapterBox:
    """What :func:`chapter_box` returns; it displays as :meth:`markdown`."""

    learn: tuple[str, ...]
    need: tuple[str, ...]
    minutes: float
    cores: int = 2

    def markdown(self) -> str:
        """The box as Markdown: a quote block with the three parts."""
        needs = ", ".join(self.need) if self.need else "no earlier chapter"
        lines = ["**In this chapter you will learn**", ""]
        lines += [f"- {item}" for item in self.learn]
        lines += ["", f"**You need:** {needs}", "",
                  f"**Running time:** {running_time(self.minutes)} on {self.cores} CPU cores "
                  "(measured when its outputs were stored)"]
        return "\n".join(f"> {line}" if line else ">" for line in lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        needs = "; ".join(re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", n) for n in self.need) or "no earlier chapter"
        return "\n".join(["You will learn:", *[f"  - {item}" for item in self.learn], f"You need: {needs}",
                          f"Running time: {running_time(self.minutes)} on {self.cores} CPU cores"])


def chapter_box(*, learn: list[str], need: list = (), minutes: float, cores: int = 2) -> ChapterBox:
    """The "you will learn / you need" box of a chapter, with its measured running time.

    Parameters
    ----------
    learn : list of str
        What the reader will learn, one Markdown line each (code and ``$math$`` allowed).
    need : list
        What the reader needs first, each a string or a pair of strings. ``"02_amata"`` links chapter 2; ``("02_amata", "the
        schedule")`` links it with words of your own; ``("notation.md", "the notation")`` links
        another page of the book; any other string is shown as it is (``"basic PyTorch"``).
    minutes : float
        The chapter's running time as measured on the book's machine (``make notebooks``).
    cores : int
        The CPU cores of that measurement.

    Returns
    -------
    ChapterBox
        Displayed as Markdown by Jupyter and by the book; the same text on every machine.
    """
    if isinstance(learn, str) or not learn:
        raise UserError("chapter_box: learn must be a non-empty list of what the chapter teaches")
    if isinstance(need, str):
        raise UserError("chapter_box: need must be a list, e.g. need=['01_minmax_pgd']")
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise UserError(f"chapter_box: cores must be a positive integer, got {cores!r}")
    running_time(minutes)
    return ChapterBox(learn=tuple(_one_line("learn", item) for item in learn),
                      need=tuple(_need(item) for item in need), minutes=float(minutes), cores=cores)
