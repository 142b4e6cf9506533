"""Every chapter of the book executes end to end at the smoke profile (the session's
smoke book, tests/conftest.py) and records verdicts consistent with their conditions
(computed, not asserted: smoke runs are too short to judge a claim)."""

import json

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
