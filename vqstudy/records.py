"""Committed records: what ``make book`` cannot afford on two cores (long schedules, the
``paper`` profile, a GPU run), executed once by one command and kept under ``records/``.

``python -m vqstudy record NAME --profile long --schedule 1 4 16`` runs, for every paper
chapter that has an entry for the profile in ``notebooks/profiles.yml`` and for each
schedule (a multiple of the profile's ``total_steps`` and ``pretrain_steps``, so the
pretrain share stays the same), one *part*: ``records/NAME/CHAPTER/xS/`` with

- ``runs.json``: every run's swept point, configuration, final metrics and training
  curves (no weights, no snapshots), written after each seed's runs finish, so a part
  stopped half-way keeps what it computed;
- ``CHAPTER.ipynb`` and ``CHAPTER.verdict.json``: the chapter's notebook executed by
  papermill on those runs (the same notebook as the book's, at these parameters);
- ``provenance.json``: commit, CPU, torch threads, workers, dates, wall time.

A part whose ``provenance.json`` says it finished is skipped, so the command resumes;
the run cache makes a re-run of a half-finished part train only what is missing.

The book renders records and never re-executes them (the "Longer training" chapter
reads the run tables). The tests re-judge each part's stored run table with today's
rules (:data:`vqstudy.claims.JUDGES`) and fail where a recorded verdict would change.
"""

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from vqstudy import claims, params, runs as run_cache, sweeps
# Reading records lives in vqstudy.recorded (the runner reads them for the scorecard, and this
# module imports the runner to execute a part's notebook); its names stay available here.
from vqstudy.recorded import (PROVENANCE_FILE, RECORDS_DIR, RUNS_FILE, SCHEDULES, changed_verdicts,  # noqa: F401
                              finished, part_dir, parts, provenance, rejudge, run_set, summary_table)


def chapters_with(profile: str, notebooks: Path | None = None) -> list[str]:
    """The chapters whose verdicts a record re-judges (:data:`claims.JUDGES`) that have
    an entry for ``profile`` in ``profiles.yml``, in book order."""
    import yaml

    entries = yaml.safe_load(params.profiles_path(notebooks).read_text())
    return [name for name in claims.JUDGES if profile in (entries.get(name) or {})]


def schedule_overrides(chapter: str, profile: str, schedule: int, notebooks: Path | None = None) -> dict:
    """``total_steps`` and ``pretrain_steps`` of the profile, times ``schedule``."""
    if not isinstance(schedule, int) or schedule < 1:
        raise ValueError(f"schedule={schedule!r} is invalid: must be a positive whole multiple of the profile's "
                         "schedule (1, 4, 16, ...)")
    P = params.resolve(chapter, profile, notebooks=notebooks)
    return {"total_steps": P["total_steps"] * schedule, "pretrain_steps": P["pretrain_steps"] * schedule}


def stored_result(result: dict) -> dict:
    """What a record keeps of a run: no tensors (weights are never kept; snapshots of
    embeddings and tokens are the run cache's)."""
    keep = ("config", "metrics", "init_metrics", "autoencoder_mse_at_vq_init", "curves", "seconds",
            "vq_step_seconds")
    return {k: result[k] for k in keep if k in result}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=params.REPO_ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "-uno")),
            "cpu": cpu, "cores": os.cpu_count(), "torch_threads": int(os.environ.get("VQSTUDY_THREADS", "1")),
            "python": platform.python_version(), "torch": torch.__version__,
            "code_version": run_cache.code_version()}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float) + "\n")
    tmp.replace(path)


def record_part(record: Path, chapter: str, profile: str, schedule: int, workers: int | None = None,
                notebook: bool = True, notebooks: Path | None = None) -> Path:
    """Run one part (a chapter at one schedule) into ``record``; see the module docstring."""
    overrides = schedule_overrides(chapter, profile, schedule, notebooks)
    plan = sweeps.plan(chapter, profile, overrides, notebooks=notebooks)
    part = part_dir(record, chapter, schedule)
    part.mkdir(parents=True, exist_ok=True)
    provenance = {"record": Path(record).name, "chapter": chapter, "profile": profile, "schedule": schedule,
                  "parameters": overrides, "runs": len(plan.configs), **machine(),
                  "workers": workers or run_cache.default_workers(), "started": now(), "finished": None}
    earlier = part / PROVENANCE_FILE
    if earlier.exists():  # resumed: the part began in an earlier sitting, whose wall time this one cannot see
        before = json.loads(earlier.read_text())
        provenance["first_started"] = before.get("first_started") or before.get("started")
        provenance["sittings"] = before.get("sittings", 1) + 1
    write_json(part / PROVENANCE_FILE, provenance)
    started = time.perf_counter()
    stored = []
    seeds = sorted({cfg.seed for cfg in plan.configs})
    for seed in seeds:  # one seed's runs at a time, each group written when it is done
        group = [(p, c) for p, c in zip(plan.points, plan.configs) if c.seed == seed]
        results = run_cache.run_all([c for _, c in group], desc=f"{chapter} x{schedule} seed {seed}", workers=workers)
        stored += [{"point": p, **stored_result(r)} for (p, _), r in zip(group, results)]
        write_json(part / RUNS_FILE, {"chapter": chapter, "profile": profile, "schedule": schedule,
                                      "parameters": {**plan.params, **overrides}, "runs": stored})
    provenance["sweep_seconds"] = round(time.perf_counter() - started, 1)
    if notebook:
        from vqstudy import runner

        at = time.perf_counter()
        runner.execute(chapter, profile, parameters=overrides, out_dir=part)
        for extra in part.glob("*.lead.png"):  # the introduction's figure: the book's, not the record's
            extra.unlink()
        provenance["notebook_seconds"] = round(time.perf_counter() - at, 1)
    provenance["wall_seconds"] = round(time.perf_counter() - started, 1)
    provenance["finished"] = now()
    write_json(part / PROVENANCE_FILE, provenance)
    return part


def record(name: str, profile: str = "long", schedules=SCHEDULES, only: list[str] | None = None,
           workers: int | None = None, root: Path | None = None, notebook: bool = True,
           notebooks: Path | None = None) -> list[Path]:
    """Every part of record ``name`` not finished yet, chapter by chapter, shortest
    schedule first; returns the parts written."""
    if profile not in params.PROFILES:
        raise ValueError(f"profile={profile!r} is not a profile: allowed {list(params.PROFILES)}")
    chapters = chapters_with(profile, notebooks)
    unknown = sorted(set(only or []) - set(chapters))
    if unknown:
        raise ValueError(f"chapters {unknown} have no {profile!r} entry to record; allowed: {chapters}")
    folder = Path(root or RECORDS_DIR) / name
    written = []
    for schedule in sorted(schedules):
        for chapter in chapters:
            if only and chapter not in only:
                continue
            if finished(part_dir(folder, chapter, schedule)):
                print(f"{chapter} x{schedule}: already recorded in {part_dir(folder, chapter, schedule)}", flush=True)
                continue
            print(f"== {chapter} x{schedule} at {profile} into {part_dir(folder, chapter, schedule)}", flush=True)
            written.append(record_part(folder, chapter, profile, schedule, workers, notebook, notebooks))
    return written
