"""Plain papermill works: a chapter executed without ``--inject-input-path``, from the
command line or from Python, knows which chapter it is (its parameters cell, generated
from its profiles entry, names it); a bad parameter ends in one line naming it; and the
sweep's progress bar names every parameter its runs differ in."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from vqstudy import chapter, runs
from vqstudy.params import REPO_ROOT
from vqstudy.training import Config

PAPERMILL = str(Path(sys.executable).with_name("papermill"))


def history(path: Path) -> dict:
    """A kernel's namespace after executing a notebook's first cells (IPython's ``In``)."""
    return {"In": ["", "ch = Chapter(globals())\n", chapter.parameters_source(path) + "\n", 'profile = "smoke"\n']}


def test_every_chapter_is_told_by_its_parameters_cell():
    notebooks = chapter.chapter_notebooks([REPO_ROOT / "notebooks"])
    assert {"tokens_collapse", "cifar10_scaling", "template"} <= {p.stem for p in notebooks}
    sources = [chapter.parameters_source(p) for p in notebooks]
    assert all(sources) and len(set(sources)) == len(sources), "two chapters have the same parameters cell"
    for path in notebooks:
        assert chapter.notebook_path(history(path)) == path


def fork(folder: Path, *names: str) -> Path:
    """``folder`` holding the template, its profiles entry and unedited copies ``names``."""
    folder.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "template.ipynb", folder / "template.ipynb")
    entries = {"template": yaml.safe_load((REPO_ROOT / "notebooks" / "profiles.yml").read_text())["template"]}
    for name in names:
        shutil.copy(folder / "template.ipynb", folder / f"{name}.ipynb")
        entries[name] = entries["template"]
    (folder / "profiles.yml").write_text(yaml.safe_dump(entries))
    (folder / "out.ipynb").write_bytes((folder / "template.ipynb").read_bytes())  # papermill's output: no entry
    return folder


def test_an_unedited_fork_of_the_template_is_the_fork(tmp_path, monkeypatch):
    folder = fork(tmp_path / "notebooks", "my_claim")
    monkeypatch.chdir(folder)  # papermill's --cwd
    assert chapter.notebook_path(history(folder / "my_claim.ipynb")) == folder / "my_claim.ipynb"


def test_two_unedited_forks_are_named_in_the_error(tmp_path, monkeypatch):
    folder = fork(tmp_path / "notebooks", "my_claim", "other_claim")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cannot tell which chapter this notebook is: .*--inject-input-path.*several chapters: my_claim, other_claim"):
        chapter.notebook_path(history(folder / "my_claim.ipynb"))


def test_a_parameters_cell_of_no_chapter_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cannot tell which chapter this notebook is: .*that of no chapter"):
        chapter.notebook_path({"In": ["", "profile = 'smoke'\n"]})


def test_a_bad_parameter_is_shown_in_one_line_and_the_next_cell_as_before(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        before = shell.InteractiveTB.mode
        assert before != "Minimal"
        shell.run_cell("from vqstudy.chapter import raise_briefly\n"
                       "def check():\n    raise ValueError('parameter x=-1 is out of range')\n"
                       "try:\n    check()\nexcept ValueError as exc:\n    raise_briefly(exc)\n")
        shown = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown] == ["ValueError: parameter x=-1 is out of range"]
        assert shell.InteractiveTB.mode == before  # restored after the cell
        shell.run_cell("1 / 0")
        assert len(capsys.readouterr().out.splitlines()) > 1
    finally:
        InteractiveShell.clear_instance()


def test_the_progress_bar_names_every_swept_parameter(monkeypatch, capsys):
    monkeypatch.setattr(runs, "cached_train", lambda cfg, use_cache=True, progress=False: {"config": cfg})
    configs = [Config(beta=beta, seed=0) for beta in (0.1, 0.25, 1.0)]
    assert runs.swept_fields(configs) == ("beta",)
    runs.run_all(configs, workers=1, progress=True, desc="beta sweep")
    shown = capsys.readouterr().err
    for beta in (0.1, 0.25, 1.0):
        assert f"done beta={beta}" in shown
    grid = [Config(regime=r, codebook_size=k, seed=s) for r in ("baseline", "pretrain") for k in (4, 16) for s in (0, 1)]
    assert runs.swept_fields(grid) == ("regime", "seed", "codebook_size")
    assert runs.run_label(grid[-1], runs.swept_fields(grid)) == "regime=pretrain seed=1 codebook_size=16"
    assert runs.run_label(grid[0], ()) == "seed=0"


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One run cache for the two executions of C3 below (the second only reads)."""
    return tmp_path_factory.mktemp("papermill-runs")


def verdicts(folder: Path, name: str) -> list[dict]:
    return json.loads((folder / f"{name}.verdict.json").read_text())["verdicts"]


@pytest.mark.slow
def test_plain_papermill_command_line_executes_a_chapter(tmp_path, shared_runs, monkeypatch):
    monkeypatch.setenv("VQSTUDY_RUNS", str(shared_runs))
    done = subprocess.run([PAPERMILL, str(REPO_ROOT / "notebooks" / "cifar10_scaling.ipynb"), str(tmp_path / "out.ipynb"),
                           "--cwd", str(tmp_path), "-p", "profile", "smoke"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {v["notebook"] for v in verdicts(tmp_path, "cifar10_scaling")} == {"cifar10_scaling"}


@pytest.mark.slow
def test_plain_papermill_from_python_executes_a_chapter(tmp_path, shared_runs, monkeypatch):
    import papermill

    monkeypatch.setenv("VQSTUDY_RUNS", str(shared_runs))
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "cifar10_scaling.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"profile": "smoke"}, cwd=str(tmp_path), progress_bar=False)
    assert {v["profile"] for v in verdicts(tmp_path, "cifar10_scaling")} == {"smoke"}


@pytest.mark.slow
def test_a_bad_parameter_ends_papermill_in_one_line_naming_it(tmp_path):
    done = subprocess.run([PAPERMILL, str(REPO_ROOT / "notebooks" / "tokens_collapse.ipynb"), str(tmp_path / "out.ipynb"),
                           "--cwd", str(tmp_path), "-p", "profile", "smoke", "-p", "total_steps", "-3"],
                          capture_output=True, text=True)
    assert done.returncode != 0
    message = "ValueError: parameter total_steps=-3 is out of range: must be a positive integer"
    printed = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert printed[-1] == message, "\n".join(printed[-30:])
    assert printed[-2].startswith("Exception encountered at")  # papermill's header, then the one line
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1 and "total_steps=-3" in errors[0].traceback[0]
