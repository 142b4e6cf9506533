"""Every chapter of the book executes end to end at the smoke profile (the session's
smoke book, tests/conftest.py) and records verdicts consistent with their conditions
(computed, not asserted: smoke runs are too short to judge a claim)."""

import json
import re

import nbformat
import pytest

from conftest import FORK
from vqstudy import claims, runner, sweeps
from vqstudy.params import REPO_ROOT

CHAPTERS = runner.executed_notebooks() + [FORK]


def test_toc_lists_every_notebook_and_each_is_committed_without_outputs():
    names = runner.executed_notebooks()
    assert {"tokens_collapse", "embeddings_collapse", "cifar10_scaling"} <= set(names)
    for name in names:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1, name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has outputs"


GLUED_PNG = "application/papermill.record/image/png"  # a figure glued for a {glue:figure}
GLUE_FIGURE = re.compile(r"^(`{3,})\{glue:figure\}\s+(\S+)\s*\n(.*?)^\1\s*$", re.S | re.M)


def glue_figures(nb) -> dict:
    """Every ``{glue:figure}`` directive of a notebook's Markdown cells: its glue key ->
    (options, caption)."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for _, key, body in GLUE_FIGURE.findall(cell.source):
            lines = body.split("\n")
            options = {}
            while lines and lines[0].startswith(":"):
                name, _, value = lines.pop(0)[1:].partition(":")
                options[name.strip()] = value.strip()
            found[key] = (options, " ".join(lines).strip())
    return found


def test_every_chapter_figure_is_numbered_with_alt_text_and_a_caption():
    """A chapter shows its figures as ``{glue:figure}``s (numbered by Sphinx), each with alt
    text and a caption that says what to look at; the chapters' figure labels are unique in
    the book (the template's figure has none, so that two forks of it do not clash)."""
    labels = {}
    for name in runner.executed_notebooks() + ["template"]:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        figures = glue_figures(nb)
        assert figures, f"{name}: no {{glue:figure}}"
        for key, (options, caption) in figures.items():
            where = f"{name}: {{glue:figure}} {key}"
            assert len(options.get("alt", "")) >= 40, f"{where}: alt text missing or too short: {options}"
            assert len(caption) >= 60 and "look" in caption.lower(), \
                f"{where}: the caption should say what to look at: {caption!r}"
            if name != "template":
                assert options.get("name"), f"{where}: no :name: (a label the prose can cite)"
                assert options["name"] not in labels, f"{where}: label also in {labels[options['name']]}"
                labels[options["name"]] = name


def images(nb) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if {"image/png", GLUED_PNG} & set(o.get("data", {})))


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executes_at_smoke_with_figures_and_consistent_verdicts(built_book, name):
    folder = built_book.root / runner.EXECUTED_DIR
    nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert images(nb) > 0, f"{name}: the executed notebook has no figures"
    # every figure is glued and shown by a {glue:figure} (numbered, captioned), none displayed bare
    glued = {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []) if GLUED_PNG in o.get("data", {})}
    bare = [c.source[:60] for c in nb.cells if c.cell_type == "code" and "remove-cell" not in c.metadata.get("tags", [])
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert not bare, f"{name}: figures shown outside a {{glue:figure}} (no number, caption or alt text): {bare}"
    assert glued == set(glue_figures(nb)), f"{name}: glued {sorted(glued)}, shown {sorted(glue_figures(nb))}"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert 'profile = "smoke"' in injected[0].source
    assert nb.metadata.get("vqstudy", {}).get("fingerprint") == runner.fingerprint(name, "smoke", built_book.root)

    recorded = json.loads(claims.verdict_path(folder, name).read_text())
    # a chapter that trains nothing renders the committed records and judges nothing itself
    renders = runner.reads_records(name, built_book.root)
    assert recorded["notebook"] == name and (recorded["verdicts"] or renders), name
    for v in recorded["verdicts"]:
        where = f"{name}: {v['claim']}"
        assert v["profile"] == "smoke" and v["notebook"] == name and v["role"] in claims.ROLES, where
        assert v["conditions"] and all(isinstance(c["holds"], bool) and c["name"] for c in v["conditions"]), where
        assert isinstance(v["holds"], bool) and v["holds"] == all(c["holds"] for c in v["conditions"]), where
        assert v["seeds"] == sorted(v["seeds"]) and v["rule"], where
    assert renders or any(v["role"] != "superseded" for v in recorded["verdicts"]), f"{name} shows no verdict"


@pytest.mark.slow
def test_the_sweeps_trained_every_run_the_notebooks_read_and_nothing_else(built_book):
    """Each chapter's sweep filled the run cache and its notebook only read it: one file
    per distinct run of the book (a notebook that trained would have needed another code
    version or other configs, and left more)."""
    from vqstudy import runs

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQSTUDY_RUNS", str(built_book.runs))
        planned = {runs.run_key(cfg) for name in runner.executed_notebooks(built_book.root)
                   for cfg in sweeps.plan(name, "smoke", notebooks=built_book.root / "notebooks").configs}
    stored = {p.stem for p in built_book.runs.glob("*.pt")}
    assert stored == planned, (f"{len(stored - planned)} stored runs no chapter planned, {len(planned - stored)} "
                               "planned runs not stored (was vqstudy edited during the build?)")
