"""Notebook parameters: one profiles file, one validation for every notebook.

A notebook's ``parameters`` cell sets ``profile`` and lists every other parameter as
``None`` ("take it from the profile"). papermill injects overrides after that cell;
:func:`notebook_parameters` then merges profile and overrides and rejects, with a
message naming the parameter, its value and what is allowed:
an unknown profile, a parameter name the notebook does not have (papermill passes
misspelled names silently), a value of the wrong type, an out-of-range value.
"""

import os
from pathlib import Path

import yaml

PROFILES = ("smoke", "quick", "paper")
REPO_ROOT = Path(__file__).resolve().parent.parent


def profiles_path() -> Path:
    return Path(os.environ.get("VQSTUDY_PROFILES", REPO_ROOT / "notebooks" / "profiles.yml"))


def load_profiles() -> dict:
    with open(profiles_path()) as f:
        return yaml.safe_load(f)


def check_type(name: str, value, default):
    """``value`` must have the type of the profile default (an int may stand for a float;
    a list must hold items of the default's item type)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and len(value) > 0
        if ok and default:
            value = [check_type(f"{name}[{i}]", v, default[0]) for i, v in enumerate(value)]
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = f"a non-empty list of {type(default[0]).__name__}" if isinstance(default, list) and default \
            else type(default).__name__
        raise ValueError(f"parameter {name}={value!r} has the wrong type: expected {kind} (e.g. {default!r})")
    return value


def resolve(notebook: str, profile: str, overrides: dict | None = None) -> dict:
    """Parameters of ``notebook`` at ``profile`` with ``overrides`` applied and checked."""
    profiles = load_profiles()
    if notebook not in profiles:
        raise ValueError(f"notebook {notebook!r} has no entry in {profiles_path()}; known: {sorted(profiles)}")
    if profile not in PROFILES:
        raise ValueError(f"parameter profile={profile!r} is not a profile: allowed {list(PROFILES)}")
    entry = profiles[notebook]
    params = {**entry["defaults"], **(entry.get(profile) or {})}
    for name, value in (overrides or {}).items():
        if name not in params:
            raise ValueError(f"unknown parameter {name!r} (value {value!r}) for notebook {notebook!r}; "
                             f"allowed: {sorted(params)} and 'profile'")
        params[name] = check_type(name, value, entry["defaults"][name])
    for name, value in params.items():
        check_range(name, value)
    params["profile"] = profile
    return params


def check_range(name: str, value) -> None:
    """Ranges every notebook shares; model-level checks (e.g. pretrain_steps <
    total_steps) happen when the configs are built (:meth:`Config.validate`)."""
    positive = ("codebook_sizes", "codebook_size", "widths", "total_steps", "batch_size", "hidden", "latent_dim", "depth",
                "input_dim", "n_train_per_class", "n_eval_per_class", "width", "kmeans_samples")
    non_negative = ("seeds", "pretrain_steps", "kmeans_iters", "train_subset", "eval_subset")
    values = value if isinstance(value, list) else [value]
    if name in positive and any(not (isinstance(v, (int, float)) and v > 0) for v in values):
        raise ValueError(f"parameter {name}={value!r} is out of range: must be > 0")
    if name in non_negative and any(not (isinstance(v, (int, float)) and v >= 0) for v in values):
        raise ValueError(f"parameter {name}={value!r} is out of range: must be >= 0")
    if name in ("lr", "separation", "noise") and not value > 0:
        raise ValueError(f"parameter {name}={value!r} is out of range: must be > 0")
    if name == "device" and value not in ("cpu", "cuda", "auto"):
        raise ValueError(f"parameter device={value!r} is not allowed: use 'cpu', 'cuda' or 'auto'")


def notebook_parameters(notebook: str, namespace: dict, names_before: set) -> dict:
    """Collect a notebook's parameters from its global ``namespace``.

    ``names_before`` is the set of global names just before the parameters cell; every
    public name added since came from the parameters cell or from papermill's injected
    cell. ``None`` means "from the profile"; any name the profile does not know is a
    misspelling and fails here.
    """
    new = {k: v for k, v in namespace.items()
           if k not in names_before and not k.startswith("_") and k not in ("In", "Out", "exit", "quit", "get_ipython")}
    profile = new.pop("profile", "quick")
    overrides = {k: v for k, v in new.items() if v is not None}
    return resolve(notebook, profile, overrides)
