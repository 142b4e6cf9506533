"""Every notebook of the book executes end to end with papermill at the smoke profile
and records its verdict (computed, not asserted: smoke runs are too short to judge)."""

import json

import nbformat
import pytest

from vqstudy import runner


@pytest.fixture
def book_root(tmp_path):
    """A copy of the book's sources so tests never touch the real book/claims/."""
    import shutil

    from vqstudy.params import REPO_ROOT

    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(REPO_ROOT / "_toc.yml", tmp_path / "_toc.yml")
    return tmp_path


def test_toc_lists_every_notebook_and_each_has_a_parameters_cell():
    from vqstudy.params import REPO_ROOT

    names = runner.executed_notebooks()
    assert "tokens_collapse" in names
    for name in names:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", runner.executed_notebooks())
def test_notebook_executes_at_smoke_and_writes_its_verdict(name, book_root):
    out = runner.execute(name, "smoke", root=book_root)
    verdict = json.loads((out.parent / f"{name}.verdict.json").read_text())
    assert verdict["profile"] == "smoke"
    assert isinstance(verdict["holds"], bool) and verdict["conditions"]
    assert verdict["holds"] == all(c["holds"] for c in verdict["conditions"])
    nb = nbformat.read(out, as_version=4)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, "the executed notebook has no figures"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata["tags"]
