"""A clean build: the book renders with Sphinx warnings as errors, so a broken internal
link or a missing figure fails it (runner.build_html), while a correct page passes.

Each case is a two-page book with the real _config.yml; the builds are separate
processes, run side by side once for the module (each takes seconds)."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from vqstudy import runner
from vqstudy.params import REPO_ROOT

TOC = "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/other\n"
OTHER = "# Other page\n\nSome text.\n"
CORRECT = "See {doc}`other` and [the other page](other.md)."
BROKEN = {
    "doc-role": "See {doc}`no_such_page`.",
    "markdown-link": "See [a page that is not there](no_such_page.md).",
    "ref-role": "See {ref}`no-such-label`.",
    "image": "![a figure that is not there](no_such_figure.png)",
    "figure-directive": "```{figure} no_such_figure.png\nCaption.\n```",
}


def build(root, body: str) -> int:
    """Render a two-page book with the real _config.yml and ``body`` on its first page."""
    root.mkdir()
    shutil.copy(REPO_ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text(TOC)
    (root / "book").mkdir()
    if (REPO_ROOT / "book" / "_static").is_dir():  # what _config.yml's html_static_path names
        shutil.copytree(REPO_ROOT / "book" / "_static", root / "book" / "_static")
    (root / "book" / "intro.md").write_text(f"# Intro\n\n{body}\n")
    (root / "book" / "other.md").write_text(OTHER)
    return runner.build_html(root)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``{case: (root, exit code)}`` for the correct book and every broken one."""
    cases = {"correct": CORRECT, **BROKEN}
    roots = {case: tmp_path_factory.mktemp("build") / case for case in cases}
    with ThreadPoolExecutor(3) as pool:
        codes = dict(zip(cases, pool.map(build, roots.values(), cases.values())))
    return {case: (roots[case], codes[case]) for case in cases}


def test_a_correct_book_builds(built):
    root, code = built["correct"]
    assert code == 0
    assert (root / "_build" / "html" / "book" / "other.html").exists()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_link_or_missing_figure_fails_the_build(built, case):
    assert built[case][1] != 0
