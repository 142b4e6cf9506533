"""A chapter's sweep: its resolved parameters -> the training runs it needs.

A chapter declares its sweep in its ``profiles.yml`` entry: ``sweep`` names the
parameters whose values are lists, and the runs are every combination of them; every
other parameter that names a :class:`~vqstudy.training.Config` field is the same in all
runs. A swept parameter may also be a mapping of named *variants*, each a few Config
fields set together (``{longer: {total_steps: 4000}, wider: {latent_dim: 64}}``); the
run table then shows the variant's name.

The book's sweep step (``python -m vqstudy sweep``) and the chapter's notebook both call
:func:`plan`, so the notebook finds in the run cache exactly the runs the sweep trained.
"""

import itertools
from dataclasses import dataclass
from pathlib import Path

from vqstudy import params
from vqstudy.training import FIELDS, Config, InvalidConfig


@dataclass
class Sweep:
    notebook: str
    params: dict           # every parameter, resolved (``profile`` included)
    axes: list[str]        # the swept parameters, in the order of ``sweep:``
    points: list[dict]     # per run: axis -> value (a variant's name for a mapping of variants)
    configs: list[Config]  # per run: what it trains


def plan(notebook: str, profile: str = params.DEFAULT_PROFILE, overrides: dict | None = None,
         notebooks: Path | None = None) -> Sweep:
    """The runs of ``notebook`` at ``profile`` with ``overrides``. Raises ``ValueError``
    naming the parameter for a bad name, type or value (ranges: :meth:`Config.validate`)."""
    P = params.resolve(notebook, profile, overrides, notebooks)
    found = params.entry(notebook, notebooks)
    axes = list(found.get("sweep") or [])
    for axis in axes:
        if axis not in P:
            raise ValueError(f"sweep axis {axis!r} of notebook {notebook!r} is not one of its parameters: "
                             f"{sorted(P)}")
        if not isinstance(P[axis], (list, dict)):
            raise ValueError(f"parameter {axis}={P[axis]!r} is swept, so it must be a list of values "
                             "(or a mapping of variants)")
    fixed = dict(found.get("fixed") or {})
    unknown = sorted(set(fixed) - set(FIELDS)) + sorted(set(fixed) & set(P))
    if unknown:
        raise ValueError(f"`fixed:` of {notebook!r} names {unknown}: it may only hold training settings "
                         "that are not parameters")
    fixed.update({name: value for name, value in P.items() if name in FIELDS and name not in axes})
    for name, value in fixed.items():
        if isinstance(value, (list, dict)):
            raise ValueError(f"parameter {name}={value!r} is a list but not swept: add it to the `sweep:` of "
                             f"{notebook!r} in profiles.yml, or give one value")
    points, configs = [], []
    if "sweep" not in found:  # a chapter that trains nothing
        return Sweep(notebook, P, axes, points, configs)
    for values in itertools.product(*(list(P[axis]) for axis in axes)):
        point = dict(zip(axes, values))
        fields = dict(fixed)
        for axis, value in point.items():
            if isinstance(P[axis], dict):
                unknown = sorted(set(P[axis][value]) - set(FIELDS))
                if unknown:
                    raise ValueError(f"parameter {axis}: variant {value!r} sets {unknown}, which are not training "
                                     f"settings; allowed: {sorted(FIELDS)}")
                fields.update(P[axis][value])
            elif axis in FIELDS:
                fields[axis] = value
        try:
            configs.append(Config(**fields).validate())
        except InvalidConfig as exc:
            raise ValueError(out_of_range(exc, P, axes, point)) from None
        points.append(point)
    check_memory(configs, P)
    return Sweep(notebook, P, axes, points, configs)


def available_memory() -> int | None:
    """Bytes this machine can still give (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(configs: list[Config], P: dict) -> None:
    """Refuse a sweep whose largest run cannot fit in this machine's available memory,
    before anything is allocated, naming the parameter that makes it large."""
    available = available_memory()
    if available is None or not configs:
        return
    needs = [(sum(cfg.memory_estimate().values()), cfg) for cfg in configs if cfg.device == "cpu"]
    if not needs:
        return
    total, cfg = max(needs, key=lambda pair: pair[0])
    if total <= available:
        return
    parts = cfg.memory_estimate()
    culprit = max(parts, key=parts.get)
    name = {"codebook": "codebook_size", "kmeans_samples": "kmeans_samples",
            "data": "train_subset" if cfg.data == "cifar10" else "n_train_per_class"}[culprit]
    shown = f"{name}={P[name]!r}" if name in P else f"{name}={getattr(cfg, name)!r}"
    raise ValueError(f"parameter {shown} is too large for this machine: the sweep's largest run "
                     f"({name}={getattr(cfg, name)}) needs about {total / 2**30:.1f} GiB "
                     f"({', '.join(f'{k} {v / 2**30:.1f} GiB' for k, v in parts.items())}), "
                     f"and {available / 2**30:.1f} GiB is available")


def out_of_range(exc: InvalidConfig, P: dict, axes: list[str], point: dict | None = None) -> str:
    """The message for a value :meth:`Config.validate` refused, naming the parameter as
    the user set it (a swept list names the bad element; a variant names itself, even
    when it overrides a parameter of the same name)."""
    name = exc.field
    for axis, value in (point or {}).items():
        if isinstance(P[axis], dict) and name in P[axis][value]:
            return (f"parameter {axis}: variant {value!r} sets {name}={exc.value!r}, which is out of range: "
                    f"must be {exc.allowed}")
    if name in P and isinstance(P[name], list):
        return f"parameter {name}={P[name]!r} is out of range: {exc.value!r} is not allowed, must be {exc.allowed}"
    if name in P:
        return f"parameter {name}={P[name]!r} is out of range: must be {exc.allowed}"
    variants = [a for a in axes if isinstance(P[a], dict) and any(name in v for v in P[a].values())]
    where = f" (set by a variant of {variants[0]!r})" if variants else ""
    return f"parameter {name}={exc.value!r}{where} is out of range: must be {exc.allowed}"
