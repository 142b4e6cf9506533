"""The provenance block names the profile, every parameter used, the seeds, the wall
time, the versions, the device and the date."""

import time

import torch

import vqstudy
from vqstudy import params, provenance


def test_provenance_has_everything_a_reader_needs():
    P = params.resolve("tokens_collapse", "smoke", {"seeds": [3, 4]})
    info = provenance.collect(P, started=time.time() - 75)
    assert info["profile"] == "smoke" and info["seeds"] == [3, 4]
    assert info["parameters"]["total_steps"] == P["total_steps"] and "profile" not in info["parameters"]
    assert 74 <= info["wall_time_s"] < 90
    text = provenance.to_markdown(info)
    for needle in ("**smoke**", "seeds 3, 4", "1 min 15 s", f"torch {torch.__version__}",
                   f"vqstudy {vqstudy.__version__}", "cpu (", "UTC", f"`total_steps={P['total_steps']}`",
                   "`seeds=[3, 4]`", "`device='cpu'`"):
        assert needle in text, needle


def test_default_start_is_the_process_start():
    assert provenance.kernel_started() <= time.time()


def test_wall_time_reads_well():
    assert provenance.wall_time(4.24) == "4.2 s"
    assert provenance.wall_time(125) == "2 min 5 s"


def test_every_chapter_ends_with_its_provenance():
    import nbformat

    from vqstudy import runner
    from vqstudy.params import REPO_ROOT

    for name in runner.executed_notebooks() + ["template"]:
        nb = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        last = nb.cells[-1]
        assert last.cell_type == "code" and last.source.strip() == "provenance.show(P)", (
            f"notebooks/{name}.ipynb must end with a code cell `provenance.show(P)` tagged remove-input")
        assert "remove-input" in last.metadata.get("tags", []), name
        assert any("provenance" in c.source and "import" in c.source for c in nb.cells if c.cell_type == "code")
