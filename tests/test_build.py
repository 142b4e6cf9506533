"""A clean build: the book renders with Sphinx warnings as errors, so a broken internal
link or a missing figure fails it (runner.build_html), while a correct page passes."""

import shutil

import pytest

from vqstudy import runner
from vqstudy.params import REPO_ROOT

TOC = "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/other\n"
OTHER = "# Other page\n\nSome text.\n"


def build(tmp_path, intro: str) -> int:
    """Render a two-page book with the real _config.yml and ``intro`` as its first page."""
    shutil.copy(REPO_ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text(intro)
    (tmp_path / "book" / "other.md").write_text(OTHER)
    return runner.build_html(tmp_path)


def test_a_correct_book_builds(tmp_path):
    assert build(tmp_path, "# Intro\n\nSee {doc}`other` and [the other page](other.md).\n") == 0
    assert (tmp_path / "_build" / "html" / "book" / "other.html").exists()


@pytest.mark.parametrize("broken", [
    "See {doc}`no_such_page`.",
    "See [a page that is not there](no_such_page.md).",
    "See {ref}`no-such-label`.",
    "![a figure that is not there](no_such_figure.png)",
    "```{figure} no_such_figure.png\nCaption.\n```",
], ids=["doc-role", "markdown-link", "ref-role", "image", "figure-directive"])
def test_a_broken_link_or_missing_figure_fails_the_build(tmp_path, broken):
    assert build(tmp_path, f"# Intro\n\n{broken}\n") != 0
