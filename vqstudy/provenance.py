"""Provenance: what produced a chapter, shown at its end.

A number in the book is only as good as the reader's knowledge of what ran to produce
it. papermill's injected-parameters cell is machine-shaped and hidden
(:func:`vqstudy.runner.hide_injected_parameters`), so the last cell of every chapter
calls :func:`show` instead: profile, every parameter actually used (profile merged with
the overrides), seeds, wall time, the versions of vqstudy (with its git commit) and
torch, the device the runs would use, and the date. One compact block, plain Markdown.
"""

import datetime
import os
import platform
import subprocess
import time

import torch

import vqstudy
from vqstudy.params import REPO_ROOT
from vqstudy.training import resolve_device, torch_threads


def kernel_started() -> float:
    """When this Python process started (epoch seconds). Under papermill the kernel is
    started for the notebook, so this is when the notebook began, imports included; a
    notebook therefore needs no ``started = time.time()`` cell of its own."""
    try:
        import psutil  # a dependency of ipykernel, so always there in a kernel

        return psutil.Process().create_time()
    except Exception:
        return time.time()


def git_commit(root=REPO_ROOT) -> str:
    """Short commit of the checkout vqstudy runs from, ``+dirty`` when it has uncommitted
    changes; empty when it is not a git checkout (e.g. an installed wheel)."""
    try:
        run = lambda *args: subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                           timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except Exception:
        return ""


def device_description(name: str = "cpu") -> str:
    """The device a run with ``device=name`` uses, resolved as training does ('auto')."""
    name = resolve_device(name).type
    if name == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    threads = torch_threads()
    return f"cpu ({cpu}; {threads} torch thread{'s' if threads != 1 else ''} a run, {os.cpu_count()} cores)"


def wall_time(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def collect(P: dict, started: float | None = None, runs: list | None = None) -> dict:
    """The provenance of a notebook whose resolved parameters are ``P`` and whose run
    results are ``runs``."""
    started = kernel_started() if started is None else started
    parameters = {k: v for k, v in P.items() if k != "profile"}
    commit = git_commit()
    return {
        "profile": P.get("profile", ""),
        # a chapter whose settings name their seeds (no `seed` parameter): the runs' seeds
        "seeds": list(P.get("seed", [])) or sorted({r["config"]["seed"] for r in runs or []}),
        "parameters": parameters,
        "wall_time_s": round(time.time() - started, 1),
        "runs": len(runs or []),
        "training_s": round(sum(r["seconds"] for r in runs or []), 1),
        "vqstudy": vqstudy.__version__ + (f" (git {commit})" if commit else ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_description(P.get("device", "cpu")),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def to_markdown(info: dict) -> str:
    """One short block: a line of who/when/where, a line of parameters."""
    params = ", ".join(f"`{k}={v!r}`" for k, v in info["parameters"].items())
    seeds = ", ".join(map(str, info["seeds"])) or "none"
    if info["runs"]:
        ran = (f"seeds {seeds}, in {wall_time(info['wall_time_s'])} of wall time, reading {info['runs']} training "
               f"runs from the run cache (they took {wall_time(info['training_s'])} to train, summed over runs) "
               f"on {info['device']}")
    else:  # a chapter that trains nothing (it renders records, which carry their own provenance)
        ran = (f"in {wall_time(info['wall_time_s'])} of wall time on {info['device']}, training nothing and "
               "reading no training run from the run cache")
    return (
        f"**Provenance.** Executed {info['date']} at profile **{info['profile']}**, {ran}; "
        f"vqstudy {info['vqstudy']}, torch {info['torch']}, Python {info['python']}.\n\n"
        f"**Parameters used** (profile `{info['profile']}` of `notebooks/profiles.yml` with any overrides): "
        f"{params}.\n"
    )


def show(P: dict, started: float | None = None, runs: list | None = None) -> None:
    """Display the provenance block: the last cell of a chapter, tagged ``remove-input``.
    Returns nothing, so the cell has no second (``Out[]``) output."""
    from IPython.display import Markdown, display

    display(Markdown(to_markdown(collect(P, started, runs))))
