"""Chapter parameters: one profiles file, one validation for every chapter.

``notebooks/profiles.yml`` holds every parameter of every chapter for every profile (the
book's *Protocol* page, ``book/protocol.md``, says what the profiles are for). A chapter's
entry names the parameters it sweeps (``sweep``), their values (``defaults``, then what
differs at ``smoke``, ``quick``, ``paper``) and a one-line ``help`` for each parameter
that is not a training setting (those are documented on :class:`vqstudy.training.Config`,
whose field names the parameters share).

:func:`resolve` merges a profile with overrides and rejects, with a message naming the
parameter, its value and what is allowed: an unknown profile, a name the chapter does not
have (papermill passes misspelled names silently), a value of the wrong type. Ranges are
checked once, by :meth:`Config.validate`, when :func:`vqstudy.sweeps.plan` builds the runs.
"""

from pathlib import Path

import yaml

from vqstudy.training import FIELDS

PROFILES = ("smoke", "quick", "long", "paper")
DEFAULT_PROFILE = "quick"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = "profiles.yml"  # beside the notebooks it describes


def profiles_path(notebooks: Path | None = None) -> Path:
    return Path(notebooks or REPO_ROOT / "notebooks") / PROFILES_FILE


def entry(notebook: str, notebooks: Path | None = None) -> dict:
    """The chapter's entry of ``profiles.yml`` (in the folder ``notebooks``)."""
    path = profiles_path(notebooks)
    with open(path) as f:
        profiles = yaml.safe_load(f)
    if notebook not in profiles:
        raise ValueError(f"notebook {notebook!r} has no entry in {path}; known: {sorted(profiles)}")
    found = profiles[notebook]
    if not isinstance(found.get("defaults"), dict):
        raise ValueError(f"the entry {notebook!r} of {path} has no 'defaults' mapping of parameters")
    return found


def check_type(name: str, value, default):
    """``value`` must have the type of the profile default (an int may stand for a float;
    a list must hold items of the default's item type; a mapping of variants must map
    names to mappings)."""
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
    elif isinstance(default, dict):
        ok = isinstance(value, dict) and len(value) > 0 and all(isinstance(v, dict) for v in value.values())
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"parameter {name}={value!r} has the wrong type: expected {type_name(default)} "
                         f"(e.g. {default!r})")
    return value


def type_name(default) -> str:
    if isinstance(default, list):
        return f"a non-empty list of {type(default[0]).__name__}" if default else "a non-empty list"
    if isinstance(default, dict):
        return "a mapping of variant names to settings"
    return type(default).__name__


def resolve(notebook: str, profile: str = DEFAULT_PROFILE, overrides: dict | None = None,
            notebooks: Path | None = None) -> dict:
    """Parameters of ``notebook`` at ``profile`` with ``overrides`` applied, names and types checked."""
    if profile not in PROFILES:
        raise ValueError(f"parameter profile={profile!r} is not a profile: allowed {list(PROFILES)}")
    found = entry(notebook, notebooks)
    defaults = found["defaults"]
    params = {**defaults, **(found.get(profile) or {})}
    for name, value in (overrides or {}).items():
        if name not in defaults:
            raise ValueError(f"unknown parameter {name!r} (value {value!r}) for notebook {notebook!r}; "
                             f"allowed: {sorted(defaults)} and 'profile'")
        params[name] = check_type(name, value, defaults[name])
    params["profile"] = profile
    return params


def meaning(name: str, found: dict) -> str:
    """One line saying what a parameter is: the entry's ``help``, else the Config field's."""
    if name in (found.get("help") or {}):
        return without_equals(found["help"][name])
    if name in FIELDS:
        return without_equals(FIELDS[name].metadata.get("help", ""))
    return ""


def without_equals(text: str) -> str:
    """papermill skips a parameters-cell line with a second ``=`` (its comment's too), so
    ``--help-notebook`` would not list that parameter: comparisons become symbols."""
    for ascii_, symbol in (("<=", "≤"), (">=", "≥"), ("!=", "≠"), ("=", "＝")):
        text = text.replace(ascii_, symbol)
    return text


def annotation(value) -> str:
    if isinstance(value, list):
        return f"list[{type(value[0]).__name__}]" if value else "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def parameters_cell(notebook: str, notebooks: Path | None = None) -> str:
    """The source of the chapter's ``parameters`` cell, made from its profiles entry: one
    line per parameter with its type, ``None`` ("from the profile") and, as the comment
    papermill shows in ``--help-notebook``, its meaning and its value at the default
    profile. ``python -m vqstudy parameters NOTEBOOK --write`` puts it in the notebook."""
    found = entry(notebook, notebooks)
    quick = resolve(notebook, DEFAULT_PROFILE, notebooks=notebooks)
    swept = set(found.get("sweep") or [])
    lines = ["# Parameters: None takes the value of `profile` in notebooks/profiles.yml; papermill overrides it.",
             f'profile: str = "{DEFAULT_PROFILE}"  # {" | ".join(PROFILES)}: which profile fills the others']
    for name in found["defaults"]:
        value = quick[name]
        shown = ", ".join(value) if isinstance(value, dict) else value
        sweep = "swept: " if name in swept else ""
        lines.append(f"{name}: {annotation(value)} = None  # {sweep}{meaning(name, found)}. "
                     f"{DEFAULT_PROFILE}: {shown}")
    return "\n".join(lines)
