"""Fixtures shared by the test files.

``isolated_run_cache``: every test has its own run cache. ``smoke_book``: the whole book
built once per session at the smoke profile, in a copy of the sources, with one chapter
forked from the template exactly as ``book/reproduce.md`` says (three files, nothing in
``vqstudy/``); the tests of the notebooks, of the fork and of the browser all read this
one build instead of building their own.
"""

import copy
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

FORK = "my_claim"  # the chapter the smoke book forks from notebooks/template.ipynb


@pytest.fixture(autouse=True)
def isolated_run_cache(tmp_path, monkeypatch):
    """Every test gets its own run cache: no test reads a result another one stored."""
    monkeypatch.setenv("VQSTUDY_RUNS", str(tmp_path / "runs"))


@dataclass
class Book:
    root: Path          # the copy of the sources the book was built in
    runs: Path          # its run cache
    code: int           # runner.build_book's exit code
    seconds: float      # wall time of the build
    fork: str           # the forked chapter's name
    forked_files: dict  # path relative to root -> "added" | "changed": what the fork touched
    library: Path       # vqstudy's sources as they were when the book was built (its chapters' fingerprints)


def digests(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def fork_template(root: Path, name: str) -> None:
    """The three-file fork of book/reproduce.md: copy the notebook, copy the profiles
    entry (at the YAML level), add the chapter to the first part of the table of contents."""
    shutil.copy(root / "notebooks" / "template.ipynb", root / "notebooks" / f"{name}.ipynb")
    profiles_file = root / "notebooks" / "profiles.yml"
    profiles = yaml.safe_load(profiles_file.read_text())
    profiles[name] = copy.deepcopy(profiles["template"])
    profiles_file.write_text(yaml.safe_dump(profiles, sort_keys=False))
    toc_file = root / "_toc.yml"
    toc = yaml.safe_load(toc_file.read_text())
    toc["parts"][0]["chapters"].append({"file": f"book/claims/{name}"})
    toc_file.write_text(yaml.safe_dump(toc, sort_keys=False))


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Book:
    """The whole book at smoke, plus the fork, built once (minutes on 2 cores: a
    notebook kernel per chapter, then Jupyter Book)."""
    from vqstudy import runner

    root = runner.copy_sources(tmp_path_factory.mktemp("smoke-book"))
    before = digests(root)
    fork_template(root, FORK)
    after = digests(root)
    touched = {path: "added" if path not in before else "changed"
               for path in sorted(set(before) | set(after)) if before.get(path) != after.get(path)}
    run_cache = tmp_path_factory.mktemp("smoke-book-runs")
    # The executed chapters' fingerprints hash the library's sources: take them from a
    # snapshot, so that a test comparing fingerprints later is not upset by an edit made
    # to vqstudy/ while the session runs (the code that ran is the code when it started).
    library = tmp_path_factory.mktemp("smoke-book-library")
    for path in Path(runner.__file__).parent.glob("*.py"):
        shutil.copy2(path, library / path.name)
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQSTUDY_RUNS", str(run_cache))
        mp.setattr(runner, "__file__", str(library / "runner.py"))
        presweep(root, [name for name in runner.executed_notebooks(root) if name != FORK])
        code = runner.build_book("smoke", root=root)  # the fork goes through its own sweep process
    return Book(root, run_cache, code, time.perf_counter() - started, FORK, touched, library)


def presweep(root: Path, names: list[str]) -> None:
    """Train the chapters' runs in one pool of worker processes, as ``python -m vqstudy
    sweep`` would chapter by chapter: the runner then finds them cached and starts no
    sweep process for them (each costs seconds of interpreter and worker start-up)."""
    from vqstudy import runs, sweeps

    configs = []
    for name in names:
        try:
            configs += sweeps.plan(name, "smoke", notebooks=root / "notebooks").configs
        except ValueError:
            pass  # a bad profiles entry: the chapter's own sweep step reports it
    try:
        runs.run_all(configs, progress=False)
    except runs.SweepFailed:
        pass  # the chapter's own sweep step trains the failed runs again and reports them


@pytest.fixture
def built_book(smoke_book, monkeypatch) -> Book:
    """``smoke_book``, failing the test at once when the build did not succeed; the
    runner fingerprints chapters with the library the book was built with."""
    from vqstudy import runner

    assert smoke_book.code == 0, f"the smoke book did not build (exit code {smoke_book.code}; see the log above)"
    monkeypatch.setattr(runner, "__file__", str(smoke_book.library / "runner.py"))
    return smoke_book


@pytest.fixture
def shares_c1_and_c3_runs():
    """A check for a practitioners' chapter whose reference runs are C1's at K = 1024 and
    C3's at K = 2048: ``check(chapter, reference)`` asserts that at quick the chapter's run
    named ``SETTING/[pretrain+]REFERENCE`` is, field for field, C1's or C3's run of the same
    regime and seed (so the run cache shares them), and returns how many it matched."""
    from vqstudy import sweeps

    def check(chapter: str, reference: str) -> int:
        plan = sweeps.plan(chapter, "quick")
        mine = {(p["run"], p["seed"]): cfg for p, cfg in zip(plan.points, plan.configs)}
        matched = 0
        for paper, setting, k in (("tokens_collapse", "synthetic", 1024), ("cifar10_scaling", "cifar10", 2048)):
            theirs = sweeps.plan(paper, "quick")
            for p, cfg in zip(theirs.points, theirs.configs):
                if p["codebook_size"] == k:
                    name = f"{setting}/{'pretrain+' if p['regime'] == 'pretrain' else ''}{reference}"
                    assert mine[(name, p["seed"])] == cfg, (paper, p)
                    matched += 1
        return matched

    return check
