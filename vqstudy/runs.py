"""The run cache and the sweep: every training run stored under a key derived from its
full config and the code that computes it.

A run is written atomically (temporary file in the same folder, then ``os.replace``),
so a run killed half-way leaves no file a later run could mistake for a result, and two
processes that compute the same run leave one file. Each file carries the SHA-256 of its
contents: a file that is truncated, altered or stored for another config is reported,
deleted and recomputed, never used.

:func:`run_all` maps configs to results over an executor: in this process by default, on
a Dask cluster when given a scheduler address (argument, notebook parameter or
``$VQSTUDY_SCHEDULER``). Either way each result lands in the run cache as soon as it is
computed, so an interrupted sweep loses only the runs that had not finished, and a
notebook executed after a cluster sweep only reads.
"""

import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from vqstudy.params import REPO_ROOT
from vqstudy.training import Config, train

# The modules whose code changes what a run computes; prose, plots and notebooks do not.
COMPUTE_MODULES = ("data.py", "cifar10.py", "models.py", "quantizer.py", "training.py", "metrics.py")
# First line of every run file: format tag, then the SHA-256 of the torch.save payload after it.
MAGIC = b"vqstudy-run-v1"
SCHEDULER_ENV = "VQSTUDY_SCHEDULER"


def code_version() -> str:
    h = hashlib.sha256()
    for name in COMPUTE_MODULES:
        path = Path(__file__).with_name(name)
        if path.exists():
            h.update(name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("VQSTUDY_RUNS", REPO_ROOT / "runs"))


def run_key(cfg: Config) -> str:
    payload = json.dumps({"config": dataclasses.asdict(cfg), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def run_path(cfg: Config) -> Path:
    return cache_dir() / f"{run_key(cfg)}.pt"


class SweepFailed(RuntimeError):
    """Some runs of a sweep raised. The others finished and are in the run cache;
    ``failures`` holds ``(config, exception)`` for each failed one."""

    def __init__(self, failures: list, n_runs: int):
        self.failures = failures
        lines = [f"  {describe(cfg)}: {type(exc).__name__}: {str(exc)[:300]}" for cfg, exc in failures]
        super().__init__(f"{len(failures)} of {n_runs} runs failed (the other runs are stored in the run cache):\n"
                         + "\n".join(lines))


def describe(cfg: Config) -> str:
    """A short name for a run in messages: the fields a sweep varies, and its cache key."""
    return (f"regime={cfg.regime} codebook_size={cfg.codebook_size} hidden={cfg.hidden} seed={cfg.seed} "
            f"lr={cfg.lr} (run {run_key(cfg)})")


def load_run(path: Path, cfg: Config | None = None) -> dict | None:
    """The stored result, or ``None`` when there is none or it is corrupt (then deleted).

    Corrupt means: no format tag, a checksum that does not match the bytes (truncated or
    altered), not a result, or -- when ``cfg`` is given -- the result of another config."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        header, _, payload = blob.partition(b"\n")
        tag, _, digest = header.partition(b" ")
        if tag != MAGIC:
            raise ValueError("no run-file header (truncated, or written by an older vqstudy)")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch (truncated or altered)")
        result = torch.load(io.BytesIO(payload), weights_only=False)
        if not isinstance(result, dict) or "metrics" not in result:
            raise ValueError("not a run result")
        if cfg is not None and result.get("config") != dataclasses.asdict(cfg):
            raise ValueError("stored for another config")
        return result
    except Exception as exc:  # never use it: warn, delete, let the caller recompute
        warnings.warn(f"run cache file {path} is corrupt ({exc.__class__.__name__}: {exc}); recomputing it")
        path.unlink(missing_ok=True)
        return None


def save_run(result: dict, path: Path) -> None:
    """Write ``result`` to ``path`` atomically: readers see the old file or the whole new one."""
    buffer = io.BytesIO()
    torch.save(result, buffer)
    payload = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it 0600; a shared run cache must be readable
            f.write(MAGIC + b" " + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clear(directory: Path | None = None) -> int:
    """Delete every stored run (and temporary files of interrupted writes); return how many files."""
    directory = Path(directory) if directory else cache_dir()
    files = [*directory.glob("*.pt"), *directory.glob("*.tmp")] if directory.is_dir() else []
    for f in files:
        f.unlink(missing_ok=True)
    return len(files)


def cached_train(cfg: Config, use_cache: bool = True, progress: bool = False) -> dict:
    """``train(cfg)``, or its stored result when the same config and code ran before."""
    return _cached_train(cfg, run_path(cfg), use_cache, progress)


def _cached_train(cfg: Config, path: Path, use_cache: bool, progress: bool = False) -> dict:
    if use_cache and (result := load_run(path, cfg)) is not None:
        return result
    result = train(cfg, progress=progress)
    if use_cache:
        save_run(result, path)
    return result


def run_all(configs: list[Config], use_cache: bool = True, progress: bool = True, desc: str = "runs",
            scheduler=None) -> list[dict]:
    """Results of every config, in order, each from the cache or trained now.

    ``scheduler``: ``None`` takes ``$VQSTUDY_SCHEDULER``; unset or empty trains here, one
    run after the other; a Dask scheduler address (``tcp://host:8786``) or a
    ``distributed.Client`` trains the missing runs on that cluster. A run that raises does
    not stop the others: they finish and are stored, then :class:`SweepFailed` names each
    failed config and its error.

    Progress bars go to the process's original stderr: inside a notebook executed by
    papermill that is the terminal running ``make book``, not the notebook's output."""
    configs = list(configs)
    if scheduler is None or scheduler == "":
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if scheduler is None:
        results, failures = _run_here(configs, use_cache, progress, desc)
    else:
        results, failures = _run_on_dask(configs, use_cache, progress, desc, scheduler)
    if failures:
        raise SweepFailed(failures, len(configs))
    return results


def _run_here(configs, use_cache, progress, desc):
    results, failures = [], []
    for cfg in tqdm(configs, desc=desc, disable=not progress, file=sys.__stderr__):
        try:
            results.append(cached_train(cfg, use_cache=use_cache, progress=progress))
        except Exception as exc:  # not KeyboardInterrupt: an interrupt stops the sweep
            failures.append((cfg, exc))
            results.append(None)
    return results, failures


def _run_on_dask(configs, use_cache, progress, desc, scheduler):
    """Submit every run that is not in the cache (once per distinct key), then collect
    results as they finish. Workers store what they compute; the client stores any result
    it cannot see in the cache (a worker without the shared filesystem)."""
    from distributed import Client, as_completed

    paths = [run_path(cfg) for cfg in configs]
    results = [load_run(p, c) if use_cache else None for p, c in zip(paths, configs)]
    todo = {}  # path -> index of the first config with that key
    for i, (path, result) in enumerate(zip(paths, results)):
        if result is None:
            todo.setdefault(path, i)
    if not todo:  # everything cached: no cluster needed
        return results, []
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc=desc, disable=not progress,
               file=sys.__stderr__)
    failures = []
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler, set_as_default=False)
    try:
        version = code_version()
        futures = {client.submit(run_on_worker, configs[i], str(path), version, use_cache,
                                 key=f"vqstudy-run-{path.stem}"): path for path, i in todo.items()}
        for future in as_completed(futures, loop=client.loop):  # loop: the client need not be the default one
            path = futures[future]
            cfg = configs[todo[path]]
            if future.status != "finished":  # the run raised, its workers kept dying, or it was cancelled
                failures.append((cfg, _exception_of(future)))
                bar.update(sum(p == path for p in paths))
                continue
            result = future.result()
            if use_cache and not path.exists():
                save_run(result, path)
            for i, p in enumerate(paths):
                if p == path:
                    results[i] = result
                    bar.update(1)
            bar.set_postfix_str(f"done {describe(cfg)}", refresh=False)
            future.release()  # stored: the cluster need not keep it in memory
    finally:
        bar.close()
        if client is not scheduler:
            client.close()
    return results, failures


def _exception_of(future) -> BaseException:
    try:
        return future.exception()
    except BaseException as exc:  # a cancelled future raises instead of returning its exception
        return exc


def run_on_worker(cfg: Config, path: str, version: str, use_cache: bool) -> dict:
    """What a Dask worker runs: the cached result or ``train(cfg)``, stored at ``path`` (the
    client's run cache; a shared filesystem makes it the same file everywhere).

    A worker whose vqstudy differs from the client's would store results under a key they
    do not belong to, so it refuses. A failed write is left to the client to redo."""
    if code_version() != version:
        raise RuntimeError(f"worker's vqstudy code version {code_version()} differs from the client's {version}: "
                           "install the same vqstudy on every worker")
    path = Path(path)
    if use_cache and (result := load_run(path, cfg)) is not None:
        return result
    result = train(cfg)
    if use_cache:
        try:
            save_run(result, path)
        except OSError as exc:
            warnings.warn(f"worker could not store {path} ({exc}); the client will")
    return result


def table(results: list[dict], config_fields=("regime", "seed", "codebook_size", "hidden")) -> pd.DataFrame:
    """One row per run: the chosen config fields and every scalar metric."""
    rows = []
    for r in results:
        row = {f: r["config"][f] for f in config_fields}
        row.update({k: v for k, v in r["metrics"].items() if not isinstance(v, (list, dict))})
        row["seconds"] = r["seconds"]
        rows.append(row)
    return pd.DataFrame(rows)
