"""A clean build: the book renders with Sphinx warnings as errors, so a broken internal
link, a missing figure or a citation of a key that is not in book/references.bib fails it
(runner.build_html), while a correct page passes.

Each case is a two-page book with the real _config.yml and bibliography; the builds are
separate processes, run side by side once for the module (each takes seconds). The last
tests read the session's smoke book: its bibliography page and the chapters' citations."""

import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from vqstudy import runner
from vqstudy.params import REPO_ROOT

TOC = "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/other\n"
OTHER = "# Other page\n\nSome text.\n\n```{bibliography}\n```\n"
CORRECT = "See {doc}`other` and [the other page](other.md), after {cite}`zhao2024collapse`."
BROKEN = {
    "unknown-citation-key": "As {cite}`no_such_key` says.",
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
    shutil.copy(REPO_ROOT / "book" / "references.bib", root / "book" / "references.bib")  # _config.yml's bibtex_bibfiles
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
    intro = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert resolved_citations(intro, "other.html") == 1 and not unresolved_keys(intro)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_link_or_missing_figure_fails_the_build(built, case):
    assert built[case][1] != 0


def bib_keys() -> list[str]:
    return re.findall(r"^@\w+\{([^,\s]+),", (REPO_ROOT / "book" / "references.bib").read_text(), re.M)


def resolved_citations(html: str, bibliography: str) -> int:
    """Citations on a page that link to an entry of the bibliography page."""
    spans = re.findall(r'<span class="bibtex-citation"[^>]*>(.*?)</span>', html, re.S)
    return sum(f'href="{bibliography}#' in span for span in spans)


def unresolved_keys(html: str) -> list[str]:
    """Citation keys (or a {cite} role) left as text on a rendered page: an unresolved citation."""
    text = re.sub(r"<[^>]+>", " ", html)
    return [key for key in bib_keys() if key in text] + (["{cite}"] if "{cite" in text else [])


def test_the_bibliography_is_valid_bibtex_with_the_keys_the_book_cites():
    import pybtex.database

    entries = pybtex.database.parse_file(REPO_ROOT / "book" / "references.bib").entries
    assert set(entries) == set(bib_keys()) and len(entries) >= 10
    for key, entry in entries.items():
        assert entry.fields.get("title") and entry.persons.get("author") and entry.fields.get("year"), key
    cited = set()
    pages = list((REPO_ROOT / "book").glob("*.md")) + list((REPO_ROOT / "notebooks").glob("*.ipynb"))
    for page in pages:
        for keys in re.findall(r"\{cite(?::\w+)?\}`([\w\-, ]+)`", page.read_text()):
            cited.update(k.strip() for k in keys.split(","))
    assert cited and cited <= set(entries), f"cited but not in book/references.bib: {sorted(cited - set(entries))}"


@pytest.mark.slow
def test_the_smoke_book_has_a_bibliography_and_its_citations_resolve(built_book):
    html = built_book.root / "_build" / "html" / "book"
    page = (html / "bibliography.html").read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    assert "Representation collapsing problems in vector quantization" in text and "2411.16550" in text
    for name, link in [("intro.html", "bibliography.html"), ("protocol.html", "bibliography.html"),
                       ("claims/tokens_collapse.html", "../bibliography.html")]:
        shown = (html / name).read_text()
        assert resolved_citations(shown, link) >= 1, f"{name}: no citation links to the bibliography"
        assert not unresolved_keys(shown), f"{name}: unresolved citation {unresolved_keys(shown)}"
