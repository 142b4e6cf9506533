"""What a chapter notebook calls: one object that knows the chapter's parameters, its
runs and where its verdicts go, so that a notebook holds only what is unique to its claim.

A chapter notebook reads, top to bottom::

    ch = Chapter(globals())        # first code cell, before the parameters cell
    # parameters cell (tagged `parameters`), papermill's injected cell after it
    P = ch.parameters()            # profile + overrides, checked; every parameter glued
    runs = ch.runs()               # the sweep's runs, from the run cache or trained now
    ...figures from runs.table / runs.pick(...) / runs.curves, a claim check...
    ch.publish(verdict)            # verdict JSON for the scorecard, glued numbers, a checklist
    ch.provenance()                # last cell

The chapter is named after its notebook file, which is how a copy of the template
becomes a new chapter without an edit: ``python -m vqstudy book`` has papermill inject the
notebook's path (``--inject-input-path``); Jupyter and VS Code say it themselves; plain
``papermill NAME.ipynb out.ipynb`` says nothing, and the chapter is then the notebook whose
parameters cell is the one this kernel executed (each chapter's is generated from its
profiles entry: :func:`notebook_path`).

A mistake in a parameter stops the notebook with one line, ``ValueError: parameter ...``,
not a traceback through the library (:func:`raise_briefly`).
"""

import json
import os
from pathlib import Path

import pandas as pd

from vqstudy import claims, convergence, params, provenance, runs as run_cache, sweeps

# Names papermill injects besides the parameters (``--inject-paths``).
PAPERMILL_NAMES = ("PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH")
TEMPLATE = "template"  # notebooks/template.ipynb: a copy of it is a chapter of its own


def notebook_path(namespace: dict) -> Path:
    """The executing notebook's file: papermill's injected input path, else what Jupyter
    (``JPY_SESSION_NAME``) or VS Code (``__vsc_ipynb_file__``) say, else the chapter whose
    parameters cell this kernel executed (:func:`notebook_from_history`)."""
    found = (namespace.get("PAPERMILL_INPUT_PATH") or os.environ.get("JPY_SESSION_NAME")
             or namespace.get("__vsc_ipynb_file__"))
    if not found:
        return notebook_from_history(namespace)
    path = Path(found)
    if not path.is_absolute() and not path.exists():  # relative to where papermill ran, not the kernel's --cwd
        path = params.REPO_ROOT / "notebooks" / path.name
    return path


def chapter_notebooks(folders: list[Path] | None = None) -> list[Path]:
    """Every chapter notebook that could be executing: ``NAME.ipynb`` beside a
    ``profiles.yml`` with an entry ``NAME``, in the working directory (papermill's
    ``--cwd``), in its ``notebooks/`` and in this checkout's ``notebooks/``, in that order
    (a notebook without an entry, such as papermill's output, is no chapter)."""
    import yaml

    if folders is None:
        folders = [Path.cwd(), Path.cwd() / "notebooks", params.REPO_ROOT / "notebooks"]
    found, seen = [], set()
    for folder in folders:
        try:
            key = folder.resolve()
            if key in seen or not (folder / "profiles.yml").is_file():
                continue
            seen.add(key)
            entries = yaml.safe_load((folder / "profiles.yml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        found += [folder / f"{name}.ipynb" for name in entries if (folder / f"{name}.ipynb").is_file()]
    return found


def parameters_source(path: Path) -> str | None:
    """The source of the notebook's cell tagged ``parameters``, stripped; None if it has none."""
    try:
        cells = json.loads(path.read_text()).get("cells", [])
    except (OSError, ValueError):
        return None
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            return ("".join(source) if isinstance(source, list) else source).strip()
    return None


def notebook_from_history(namespace: dict, folders: list[Path] | None = None) -> Path:
    """The chapter whose parameters cell is among the cells this kernel executed
    (IPython's ``In``). Each chapter's parameters cell is generated from its own profiles
    entry (``python -m vqstudy parameters NAME``), so it names the chapter; an unedited copy
    of the template also matches the template, and is preferred to it. The same chapter
    in two checkouts is the one nearer the working directory."""
    executed = {source.strip() for source in namespace.get("In") or [] if isinstance(source, str) and source.strip()}
    matches = [path for path in chapter_notebooks(folders) if parameters_source(path) in executed]
    names = list(dict.fromkeys(path.stem for path in matches))
    if len(names) > 1:
        names = [name for name in names if name != TEMPLATE] or names
    if len(names) == 1:
        return next(path for path in matches if path.stem == names[0])
    why = ("its parameters cell is that of several chapters: " + ", ".join(names) if names
           else "its parameters cell is that of no chapter in notebooks/ or in the working directory")
    raise ValueError("cannot tell which chapter this notebook is: execute it with papermill's --inject-input-path "
                     "(e.g. `papermill --inject-input-path notebooks/NAME.ipynb out.ipynb`; `python -m vqstudy book` "
                     f"does it) or open it in Jupyter; {why}")


def raise_briefly(exc: Exception):
    """Raise ``exc`` so that IPython (and papermill, which prints what IPython shows) shows
    it as one line, ``ValueError: message``: a bad parameter is the reader's mistake, not
    the library's, and its message says all. The next cell shows tracebacks as before;
    outside IPython this is a plain ``raise``."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    shown = getattr(shell, "InteractiveTB", None)
    if shown is not None and getattr(shown, "mode", "Minimal") != "Minimal":
        previous = shown.mode

        def restore(*args):
            shown.set_mode(previous)
            shell.events.unregister("post_run_cell", restore)

        shown.set_mode("Minimal")
        shell.events.register("post_run_cell", restore)
    raise exc


def text(value) -> str:
    """A parameter as prose: lists joined, variants by name."""
    if isinstance(value, dict):
        return ", ".join(map(str, value))
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


class RunSet:
    """The runs of a sweep: ``table`` (one row per run: the swept parameters, every
    scalar metric, seconds), ``pick`` and ``curves``."""

    def __init__(self, points: list[dict], results: list[dict]):
        self.points, self.results = points, results
        rows = []
        for point, r in zip(points, results):
            row = dict(point)
            row.update({k: v for k, v in r["metrics"].items() if not isinstance(v, (list, dict))})
            row["autoencoder_mse"] = r["autoencoder_mse_at_vq_init"]
            row["seconds"] = r["seconds"]
            row["total_steps"] = r["config"]["total_steps"]
            # True / False by the rule; None where the curves cannot tell (no curves recorded)
            row["converged"] = convergence.run_convergence(r["curves"], r["config"]["total_steps"])["converged"]
            rows.append(row)
        self.table = pd.DataFrame(rows)

    def pick(self, by: str, **where) -> dict:
        """``{value of by: result}`` among the runs whose swept parameters equal ``where``,
        e.g. ``runs.pick("regime", codebook_size=1024, seed=0)``."""
        found = {p[by]: r for p, r in zip(self.points, self.results)
                 if all(p.get(k) == v for k, v in where.items())}
        if not found:
            raise KeyError(f"no run with {where}; swept values: "
                           f"{ {k: sorted({p[k] for p in self.points}, key=str) for k in self.points[0]} }")
        return found

    @property
    def curves(self) -> pd.DataFrame:
        """The training curves of every run, long: the swept parameters, then step,
        phase, loss, mse, perplexity, usage, dead_tokens."""
        frames = []
        for point, r in zip(self.points, self.results):
            curve = pd.DataFrame(r["curves"])
            for name, value in point.items():
                curve[name] = value
            frames.append(curve)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def settles(v: "claims.Verdict") -> str:
    """How many seeds would settle a fragile verdict: the most that any of its deciding
    conditions needs (:func:`vqstudy.rules.seeds_to_settle`)."""
    from vqstudy import rules

    needed = [n for c in rules.verdict_fragile(v.conditions) if (n := rules.seeds_to_settle(c))]
    return (f"{v.claim}: about {max(needed)} seeds would make the seed spread's standard error smaller "
            "than the margin" if needed else f"{v.claim}: its margins give no estimate")


class Chapter:
    def __init__(self, namespace: dict):
        """Call in the first code cell with ``globals()``: every name the parameters cell
        and papermill's injected cell add after this is a parameter (or a misspelling)."""
        self.namespace = namespace
        self.names_before = set(namespace)
        self.sweep = None
        self.results = []

    @property
    def name(self) -> str:
        return notebook_path(self.namespace).stem

    def parameters(self) -> dict:
        """The resolved parameters (profile merged with overrides, every value checked,
        the sweep planned), each glued under its own name for the prose."""
        from myst_nb import glue

        new = {k: v for k, v in self.namespace.items()
               if k not in self.names_before and not k.startswith("_") and k not in PAPERMILL_NAMES
               and k not in ("In", "Out", "exit", "quit", "get_ipython") and v is not self}
        profile = new.pop("profile", params.DEFAULT_PROFILE)
        overrides = {k: v for k, v in new.items() if v is not None}
        try:
            path = notebook_path(self.namespace)
            self.sweep = sweeps.plan(path.stem, profile, overrides, notebooks=path.parent)
        except ValueError as exc:  # a bad name, type or value: its message, in one line
            raise_briefly(exc)
        for key, value in self.sweep.params.items():
            glue(key, text(value), display=False)
            if isinstance(value, (list, dict)):
                glue(f"n_{key}", str(len(value)), display=False)
        glue("n_runs", str(len(self.sweep.configs)), display=False)
        return self.sweep.params

    def runs(self) -> RunSet:
        """Every run of the sweep, from the run cache (``python -m vqstudy book`` trained
        them before executing the notebook) or trained now."""
        if self.sweep is None:
            raise RuntimeError("call ch.parameters() before ch.runs()")
        missing = sum(not run_cache.run_path(cfg).exists() for cfg in self.sweep.configs)
        if missing:  # said in the chapter: a book build trains in its sweep step, never here
            print(f"{missing} of {len(self.sweep.configs)} runs are not in the run cache {run_cache.cache_dir()} "
                  f"(code version {run_cache.code_version()}): training them now")
        self.results = run_cache.run_all(self.sweep.configs, desc=f"{self.sweep.notebook} runs")
        return RunSet(self.sweep.points, self.results)

    def replan(self, **changes) -> "sweeps.Sweep":
        """The sweep of this chapter with ``changes`` to its parameters (every other one as
        resolved), planned but not run: e.g. the configurations a setting would train, to
        read them from a record instead (:func:`vqstudy.recorded.stored_runs`)."""
        if self.sweep is None:
            raise RuntimeError("call ch.parameters() before ch.replan()")
        path = notebook_path(self.namespace)
        overrides = {k: v for k, v in self.sweep.params.items() if k != "profile"}
        overrides.update(changes)
        return sweeps.plan(path.stem, self.sweep.params["profile"], overrides, notebooks=path.parent)

    def publish(self, *verdicts: "claims.Verdict") -> None:
        """Record the verdicts (``NAME.verdict.json`` in the working directory, which the
        scorecard reads), glue their outcomes and numbers (``<claim>_verdict``,
        ``<claim>_<number>``, claim in lower case) and show each as a checklist. A fragile
        verdict that :meth:`settle` did not see says how many seeds would settle it."""
        from IPython.display import Markdown, display
        from myst_nb import glue

        for v in verdicts:
            v.profile, v.notebook = self.sweep.params["profile"], self.sweep.notebook
            if v.role != "superseded" and v.fragile and not v.more_seeds:  # a chapter that runs no more seeds
                v.more_seeds = f"No more seeds run in this chapter. {settles(v)}."
            if not v.runs and self.results:  # not said by its check: all of the chapter's runs
                v.judged_on(RunSet(self.sweep.points, self.results).table)
        claims.record(list(verdicts), Path.cwd(), self.sweep.notebook)
        for v in verdicts:
            prefix = v.claim.lower()
            glue(f"{prefix}_verdict", v.outcome, display=False)
            for key, value in v.numbers.items():  # numpy scalars as Python numbers, so {glue:text}`x:.1%` formats
                glue(f"{prefix}_{key}", value.item() if hasattr(value, "item") else value, display=False)
            display(Markdown(v.checklist()))

    def settle(self, verdicts: list, judge, budget_seconds: float, most_seeds: int = 5) -> tuple[list, str]:
        """More seeds where a verdict is fragile (the Protocol page, "How sure a verdict is").

        When a verdict (not a superseded rule) is fragile and the chapter sweeps a ``seed``
        list shorter than ``most_seeds``, the next seeds are trained, if their estimated
        time (this chapter's mean run time per seed, over the worker processes) fits in
        ``budget_seconds``, and ``judge(runs)`` (a :class:`RunSet` -> verdicts) judges all
        the seeds again; the chapter's sweep is then the one with every seed (what
        :meth:`publish` and :meth:`provenance` report). Returns the verdicts to publish and
        a Markdown note saying how the fragile verdicts moved, or how many seeds would
        settle them; each of those verdicts carries its part of the note (``more_seeds``),
        which its checklist and the scorecard show."""
        fragile = [v for v in verdicts if v.role != "superseded" and v.fragile]
        if not fragile:
            return verdicts, "No verdict here is fragile, so no more seeds were run."
        seeds = self.sweep.params.get("seed")
        was = {v.claim: f"{v.claim} {v.outcome} at {len(v.seeds)} seeds, fragile "
                        f"({v.fragility()[len('Fragile: '):].rstrip('.')})" for v in fragile}
        before = "; ".join(was.values())

        def unsettled(why: str) -> tuple[list, str]:
            for v in fragile:
                v.more_seeds = f"{why} {settles(v)}."
            return verdicts, f"{before}. {why} " + "; ".join(map(settles, fragile)) + "."

        if not isinstance(seeds, list) or not self.results:
            return unsettled("No more seeds run here: this chapter's runs do not sweep a list of seeds.")
        if len(seeds) >= most_seeds:
            return unsettled(f"No more seeds run here: {len(seeds)} seeds already, the most this step runs "
                             f"is {most_seeds}.")
        extra = [max(seeds) + 1 + i for i in range(most_seeds - len(seeds))]
        estimate = sum(r["seconds"] for r in self.results) / len(seeds) * len(extra) / run_cache.default_workers()
        if estimate > budget_seconds:
            return unsettled(f"Seeds {', '.join(map(str, extra))} would take about {estimate:.0f} s, more than "
                             f"the {budget_seconds:.0f} s this chapter allows for them.")
        folder = notebook_path(self.namespace).parent
        names = params.entry(self.sweep.notebook, folder)["defaults"]
        overrides = {k: v for k, v in self.sweep.params.items() if k in names}
        more = sweeps.plan(self.sweep.notebook, self.sweep.params["profile"], {**overrides, "seed": seeds + extra},
                           notebooks=folder)
        results = run_cache.run_all(more.configs, desc=f"{self.sweep.notebook}: seeds {extra}")
        settled = judge(RunSet(more.points, results))
        all_seeds = ", ".join(map(str, seeds + extra))
        moved = []
        for v in settled:
            if v.claim in was:
                now = f"{v.outcome}, {'still fragile' if v.fragile else 'no longer fragile'}"
                v.more_seeds = f"{was[v.claim]}; with seeds {all_seeds}: {now}."
                moved.append(f"{v.claim} {now}")
        self.sweep, self.results = more, results
        return settled, (f"{before}. With seeds {all_seeds} ({estimate:.0f} s estimated, within the "
                         f"{budget_seconds:.0f} s allowed): {'; '.join(moved)}. The figures and tables above show "
                         f"seeds {', '.join(map(str, seeds))}; the verdicts are judged on all {len(seeds + extra)}.")

    def provenance(self) -> None:
        """The chapter's last cell: what produced it (see :mod:`vqstudy.provenance`)."""
        provenance.show(self.sweep.params, runs=self.results)
