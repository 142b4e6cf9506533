"""The runner's contract with `make book`: a failed notebook leaves no verdict behind (not
even an old one) and the scorecard says so; Ctrl-C stops at once with exit code 130 and
writes no pages; bad arguments are refused; the sweep step runs in its own process only
when runs are missing; a chapter executed from unchanged sources is not executed again,
and any change to its notebook, its profiles entry, the profile or the library is."""

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from vqstudy import claims, runner, runs, sweeps

TOC = ("format: jb-book\nroot: book/intro\nparts:\n  - caption: Claims\n    chapters:\n"
       "      - file: book/claims/scorecard\n      - file: book/claims/broken\n")
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def only_popen(popen) -> SimpleNamespace:
    """The runner's ``subprocess`` with ``Popen`` replaced (papermill's own stays real)."""
    return SimpleNamespace(Popen=popen, TimeoutExpired=subprocess.TimeoutExpired, call=subprocess.call)


def make_root(tmp_path, cells: list[str]) -> Path:
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "profiles.yml").write_text("broken:\n  defaults: {note: x}\n")  # trains nothing
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('profile = "quick"\nnote = None',
                                                                   metadata={"tags": ["parameters"]})]
                                  + [nbformat.v4.new_code_cell(c) for c in cells], metadata=KERNEL)
    nbformat.write(nb, tmp_path / "notebooks" / "broken.ipynb")
    (tmp_path / runner.EXECUTED_DIR).mkdir(parents=True)
    return tmp_path


@pytest.mark.slow
def test_a_failed_notebook_leaves_no_stale_verdict_and_the_scorecard_says_so(tmp_path, capsys, monkeypatch):
    root = make_root(tmp_path, ['raise RuntimeError("this notebook is broken")'])
    folder = root / runner.EXECUTED_DIR
    old = claims.Verdict("B", "Broken", "rule", [claims.Condition("ok", True, "")], {}, profile="smoke")
    claims.record([old], folder, "broken")  # from an earlier, successful build

    def no_sweep_process(*args, **kwargs):
        raise AssertionError(f"a chapter that trains nothing needs no sweep process: {args}")

    monkeypatch.setattr(runner, "subprocess", only_popen(no_sweep_process))  # the kernel still starts
    assert runner.build_book("smoke", build=False, root=root) == 1
    assert not claims.verdict_path(folder, "broken").exists()
    out = capsys.readouterr()
    assert "broken" in out.out and "FAILED" in out.out and "this notebook is broken" in out.out
    assert "1 chapter(s) failed: ['broken']" in out.err
    page = (folder / "scorecard.md").read_text()
    assert "{bdg-secondary}`no verdict`" in page and "**broken**" in page
    executed = nbformat.read(folder / "broken.ipynb", as_version=4)  # rendered with its error
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata["tags"]
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells for o in c.get("outputs", []))
    assert not runner.up_to_date("broken", "smoke", root)  # a failed chapter is executed again next time


@pytest.mark.parametrize("where", ["sweep raises", "sweep exits 130", "execute raises"])
def test_ctrl_c_stops_the_build_with_130_and_writes_no_pages(tmp_path, monkeypatch, capsys, where):
    root = make_root(tmp_path, [])
    executed = []

    def sweep(name, profile, root, scheduler=None):
        if where == "sweep raises":
            raise KeyboardInterrupt
        return 130 if where == "sweep exits 130" else 0

    def execute(name, profile, root, parameters=None):
        executed.append(name)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "sweep", sweep)
    monkeypatch.setattr(runner, "execute", execute)
    monkeypatch.setattr(runner, "build_html", lambda root: pytest.fail("rendered after Ctrl-C"))
    assert runner.build_book("smoke", root=root) == 130
    assert executed == (["broken"] if where == "execute raises" else [])
    assert not list((root / runner.EXECUTED_DIR).iterdir())  # no scorecard, summary or rule log: no half-made book
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again to resume" in err


@pytest.mark.parametrize("profile, only, message", [
    ("fast", None, "error: --profile 'fast' is not a profile; allowed: smoke, quick, long, paper"),
    ("smoke", ["nope"], "error: --only ['nope'] not in _toc.yml; the book's notebooks are ['broken']"),
])
def test_an_unknown_profile_or_chapter_is_refused(tmp_path, capsys, monkeypatch, profile, only, message):
    root = make_root(tmp_path, [])
    monkeypatch.setattr(runner, "sweep", lambda *a, **k: pytest.fail("swept a refused build"))
    assert runner.build_book(profile, only=only, root=root) == 2
    assert message in capsys.readouterr().err
    assert not list((root / runner.EXECUTED_DIR).iterdir())


class FakeProcess:
    """What runner.sweep sees of ``python -m vqstudy sweep``."""
    commands, interrupt = [], False

    def __init__(self, command, cwd):
        FakeProcess.commands.append(command)
        self.terminated = False

    def wait(self, timeout=None):
        if FakeProcess.interrupt and not self.terminated:
            raise KeyboardInterrupt
        return 0

    def terminate(self):
        self.terminated = True
        FakeProcess.terminated = True

    def kill(self):
        pass


def test_the_sweep_step_runs_in_its_own_process_only_for_missing_runs(tmp_path, monkeypatch, capsys):
    root = make_root(tmp_path, [])
    (root / "notebooks" / "profiles.yml").write_text(yaml.safe_dump({"broken": {
        "sweep": ["seed"], "defaults": {"seed": [0, 1], "total_steps": 10, "pretrain_steps": 5}}}))
    monkeypatch.setattr(runner, "subprocess", only_popen(FakeProcess))
    FakeProcess.commands, FakeProcess.interrupt = [], False
    assert runner.sweep("broken", "smoke", root, scheduler="tcp://127.0.0.1:1") == 0
    command = FakeProcess.commands[-1]
    assert command[1:4] == ["-m", "vqstudy", "sweep"] and command[4] == str(root / "notebooks" / "broken.ipynb")
    assert command[5:] == ["--profile", "smoke", "--scheduler", "tcp://127.0.0.1:1"]

    FakeProcess.interrupt = True  # Ctrl-C while the sweep runs: the sweep process is stopped, the interrupt goes on
    with pytest.raises(KeyboardInterrupt):
        runner.sweep("broken", "smoke", root)
    assert FakeProcess.terminated

    for cfg in sweeps.plan("broken", "smoke", notebooks=root / "notebooks").configs:
        runs.save_run({"config": {}, "metrics": {}}, runs.run_path(cfg))
    FakeProcess.commands = []
    assert runner.sweep("broken", "smoke", root) == 0
    assert FakeProcess.commands == [] and "every run is in the run cache" in capsys.readouterr().out


def test_copy_sources_leaves_build_products_behind(tmp_path):
    dst = runner.copy_sources(tmp_path / "copy")
    assert (dst / "_toc.yml").read_bytes() == (runner.REPO_ROOT / "_toc.yml").read_bytes()
    assert (dst / "notebooks" / "tokens_collapse.ipynb").exists() and (dst / "notebooks" / "profiles.yml").exists()
    assert (dst / "book" / "intro.md").exists() and not (dst / "book" / "claims").exists()
    assert not (dst / "_build").exists() and not (dst / "runs").exists()


def copy_built(book, destination: Path) -> Path:
    """The smoke book's sources and executed chapters, without its HTML."""
    shutil.copytree(book.root, destination, ignore=shutil.ignore_patterns("_build"))
    return destination


@pytest.mark.slow
def test_an_executed_chapter_is_up_to_date_until_its_sources_change(built_book, tmp_path, monkeypatch, capsys):
    root = copy_built(built_book, tmp_path / "book")
    names = runner.executed_notebooks(root)
    calls = []
    monkeypatch.setattr(runner, "sweep", lambda name, *a, **k: calls.append(("sweep", name)) or 0)
    monkeypatch.setattr(runner, "execute", lambda name, *a, **k: calls.append(("execute", name)))

    def executed_by(profile="smoke", only=None) -> list[str]:
        calls.clear()
        assert runner.build_book(profile, only=only, build=False, root=root) == 0
        return [name for step, name in calls if step == "execute"]

    assert executed_by() == [] and calls == []  # neither swept nor executed
    out = capsys.readouterr().out
    assert all(re.search(rf"{name}\s+up to date", out) for name in names), out
    verdicts = claims.read(root / runner.EXECUTED_DIR, names[0])
    assert verdicts and runner.verdict_line(verdicts) in out  # the recorded verdicts are reported

    first, second = names[0], names[1]
    path = root / "notebooks" / f"{first}.ipynb"
    original = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("One more sentence."))
    nbformat.write(nb, path)
    assert executed_by() == [first] and ("sweep", first) in calls
    path.write_bytes(original)
    assert executed_by() == []

    profiles_file = root / "notebooks" / "profiles.yml"
    original = profiles_file.read_text()
    profiles = yaml.safe_load(original)
    profiles[second].setdefault("smoke", {})["curve_points"] = 3
    profiles_file.write_text(yaml.safe_dump(profiles, sort_keys=False))
    assert executed_by() == [second]
    profiles_file.write_text(original)

    assert executed_by("quick", only=[first]) == [first]  # another profile is another chapter

    library = shutil.copytree(built_book.library, tmp_path / "vqstudy")  # the library the book was built with
    monkeypatch.setattr(runner, "__file__", str(library / "runner.py"))
    assert executed_by() == []
    (library / "plots.py").write_text((library / "plots.py").read_text() + "\n# a change to a figure\n")
    assert executed_by() == names  # the figures and the checks are part of every chapter

