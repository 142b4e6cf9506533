"""The run cache and the sweep: every training run stored under a key derived from its
full config and the code that computes it.

A run is written atomically (temporary file in the same folder, then ``os.replace``),
so a run killed half-way leaves no file a later run could mistake for a result; a file
that fails to load is reported, deleted and recomputed, never used.
"""

import dataclasses
import hashlib
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


def load_run(path: Path) -> dict | None:
    """The stored result, or ``None`` when there is none or it is corrupt (then deleted)."""
    if not path.exists():
        return None
    try:
        result = torch.load(path, weights_only=False)
        if not isinstance(result, dict) or "metrics" not in result:
            raise ValueError("not a run result")
        return result
    except Exception as exc:  # a truncated or foreign file: recompute, never use
        warnings.warn(f"run cache file {path} is corrupt ({exc.__class__.__name__}: {exc}); recomputing it")
        path.unlink(missing_ok=True)
        return None


def save_run(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(result, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_train(cfg: Config, use_cache: bool = True, progress: bool = False) -> dict:
    """``train(cfg)``, or its stored result when the same config and code ran before."""
    path = run_path(cfg)
    if use_cache and (result := load_run(path)) is not None:
        return result
    result = train(cfg, progress=progress)
    if use_cache:
        save_run(result, path)
    return result


def run_all(configs: list[Config], use_cache: bool = True, progress: bool = True, desc: str = "runs") -> list[dict]:
    """Results of every config, in order, each from the cache or trained now.

    Progress bars go to the process's original stderr: inside a notebook executed by
    papermill that is the terminal running ``make book``, not the notebook's output."""
    results = []
    for cfg in tqdm(configs, desc=desc, disable=not progress, file=sys.__stderr__):
        results.append(cached_train(cfg, use_cache=use_cache, progress=progress))
    return results


def table(results: list[dict], config_fields=("regime", "seed", "codebook_size", "hidden")) -> pd.DataFrame:
    """One row per run: the chosen config fields and every scalar metric."""
    rows = []
    for r in results:
        row = {f: r["config"][f] for f in config_fields}
        row.update({k: v for k, v in r["metrics"].items() if not isinstance(v, (list, dict))})
        row["seconds"] = r["seconds"]
        rows.append(row)
    return pd.DataFrame(rows)
