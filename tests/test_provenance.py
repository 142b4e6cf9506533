"""The provenance block names the profile, every parameter used, the seeds, the wall time,
the runs read and their training time, the versions, the device and the date; every
chapter ends with it."""

import time

import nbformat
import pytest
import torch
import yaml

import vqstudy
from vqstudy import params, provenance
from vqstudy.params import REPO_ROOT


def test_provenance_has_everything_a_reader_needs():
    P = params.resolve("tokens_collapse", "smoke", {"seed": [3, 4]})
    info = provenance.collect(P, started=time.time() - 75, runs=[{"seconds": 2.5}, {"seconds": 1.0}])
    assert info["profile"] == "smoke" and info["seeds"] == [3, 4]
    assert info["parameters"]["total_steps"] == P["total_steps"] and "profile" not in info["parameters"]
    assert 74 <= info["wall_time_s"] < 90 and info["runs"] == 2 and info["training_s"] == 3.5
    text = provenance.to_markdown(info)
    for needle in ("**Provenance.**", "**smoke**", "seeds 3, 4", "1 min 15 s", "reading 2 training runs", "3.5 s",
                   f"torch {torch.__version__}", f"vqstudy {vqstudy.__version__}", "cpu (", "UTC",
                   f"`total_steps={P['total_steps']}`", "`seed=[3, 4]`", "`device='cpu'`"):
        assert needle in text, needle


def test_default_start_is_the_process_start():
    assert provenance.kernel_started() <= time.time()


def test_wall_time_reads_well():
    assert provenance.wall_time(4.24) == "4.2 s"
    assert provenance.wall_time(125) == "2 min 5 s"


@pytest.mark.parametrize("name", sorted(yaml.safe_load((REPO_ROOT / "notebooks" / "profiles.yml").read_text())))
def test_every_chapter_ends_with_its_provenance(name):
    nb = nbformat.read(REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    last = nb.cells[-1]
    code = "\n".join(line.split("#")[0].rstrip() for line in last.source.splitlines()).strip()  # comments aside
    assert last.cell_type == "code" and code == "ch.provenance()", (
        f"notebooks/{name}.ipynb must end with a code cell `ch.provenance()` tagged remove-input")
    assert "remove-input" in last.metadata.get("tags", []), name
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "ch = Chapter(globals())" in first_code.source, f"{name}: the first code cell creates the Chapter"
