"""Committed records read back: what the book renders and the tests re-judge.

A record (``records/NAME/``, written by :mod:`vqstudy.records`) holds one *part* per
chapter and schedule, ``records/NAME/CHAPTER/xS/``: ``runs.json`` (every run's swept
point, configuration, final metrics and training curves), the executed notebook, the
verdicts it recorded and ``provenance.json`` (``finished`` is null while the part runs).

Everything here reads; nothing trains or executes a notebook, so the runner can read a
record for the scorecard (:func:`longest_verdicts`) and the *Longer training* chapter
can render one (:func:`verdicts_by_schedule`, :func:`schedule_runs`, :func:`c3_lead`,
:func:`convergence_statement`, :func:`timings`) without the record ever being executed
again. Verdicts are always computed again from the stored run tables with today's rules
(:func:`rejudge`, :data:`vqstudy.claims.JUDGES`). :mod:`vqstudy.records` re-exports the
names it had before this module was split from it.
"""

import json
from pathlib import Path

import pandas as pd

from vqstudy import claims, convergence, params
from vqstudy.chapter import RunSet

RECORDS_DIR = params.REPO_ROOT / "records"
RUNS_FILE = "runs.json"
PROVENANCE_FILE = "provenance.json"
SCHEDULES = (1, 4, 16)
NEWEST = "newest"          # the record parameter's value for the newest long record
LONG_PREFIX = "long-"      # long-schedule records: records/long-cpu-2026-12-07, ...
# The verdicts each recorded chapter shows (its judge's, without the superseded rules), in
# book order: what a part that is not recorded yet stands for (tests check it against JUDGES).
CHAPTER_CLAIMS = {"tokens_collapse": ("C1",), "embeddings_collapse": ("C2", "C2h"),
                  "cifar10_scaling": ("C3a", "C3b")}
CHAPTER_SHORT = {"tokens_collapse": "C1", "embeddings_collapse": "C2", "cifar10_scaling": "C3"}


def part_dir(record: Path, chapter: str, schedule: int) -> Path:
    return Path(record) / chapter / f"x{schedule}"


def finished(part: Path) -> bool:
    path = Path(part) / PROVENANCE_FILE
    return path.exists() and json.loads(path.read_text()).get("finished") is not None


def parts(root: Path | None = None) -> list[Path]:
    """Every part with a run table under ``root`` (``records/``), sorted by record,
    chapter and schedule."""
    root = Path(root or RECORDS_DIR)
    found = [p.parent for p in root.glob(f"*/*/x*/{RUNS_FILE}")]
    return sorted(found, key=lambda p: (p.parent.parent.name, p.parent.name, int(p.name[1:])))


def run_set(part: Path) -> RunSet:
    """A part's runs as the chapter notebook sees them (``table``, ``curves``)."""
    data = json.loads((Path(part) / RUNS_FILE).read_text())
    return RunSet([r["point"] for r in data["runs"]], data["runs"])


def provenance(part: Path) -> dict:
    return json.loads((Path(part) / PROVENANCE_FILE).read_text())


def rejudge(part: Path) -> list[claims.Verdict]:
    """The part's verdicts computed again from its stored run table with today's rules."""
    chapter = Path(part).parent.name
    return claims.JUDGES[chapter](run_set(part).table)


def changed_verdicts(part: Path) -> list[str]:
    """Where today's rules would change a verdict the part recorded: one line each
    (empty when none; a part without a recorded verdict file has nothing to compare)."""
    recorded = claims.read(part, Path(part).parent.name)
    if recorded is None:
        return []
    before = {v["claim"]: v["holds"] for v in recorded}
    lines = []
    for v in rejudge(part):
        if v.claim not in before:
            lines.append(f"{part}: {v.claim} is new ({v.outcome}); record it again")
        elif before[v.claim] != v.holds:
            lines.append(f"{part}: {v.claim} was recorded as {'holds' if before[v.claim] else 'does not hold'}, "
                         f"today's rule says {v.outcome}")
    return lines


def summary_table(root: Path | None = None) -> pd.DataFrame:
    """One row per verdict of every finished part: record, chapter, schedule, steps,
    verdict, outcome, conditions held, runs converged."""
    rows = []
    for part in parts(root):
        if not finished(part):
            continue
        prov = provenance(part)
        for v in rejudge(part):
            rows.append({"record": prov["record"], "chapter": prov["chapter"], "schedule": prov["schedule"],
                         "steps": claims.schedule_steps(v.steps) if v.steps else "", "claim": v.claim,
                         "role": v.role, "outcome": v.outcome,
                         "conditions": f"{sum(c.holds for c in v.conditions)} of {len(v.conditions)}",
                         "converged": v.converged, "runs": v.runs, "finished": prov["finished"]})
    return pd.DataFrame(rows)


# --- which record -----------------------------------------------------------------------

def records_root(notebook: Path | str | None = None) -> Path:
    """``records/`` of the checkout a chapter notebook (``notebooks/NAME.ipynb``) belongs
    to, so that a copy of the sources reads its own records; ``records/`` of this
    checkout without a notebook."""
    return Path(notebook).resolve().parent.parent / "records" if notebook else RECORDS_DIR


def record_parts(record: Path) -> list[Path]:
    return [p for p in parts(Path(record).parent) if p.parent.parent == Path(record)]


def started(record: Path) -> str:
    """When the record's first part started (ISO date and time), "" when unknown."""
    return min((provenance(p).get("started") or "" for p in record_parts(record)), default="")


def record_folders(root: Path | None = None, prefix: str = LONG_PREFIX) -> list[Path]:
    """The records under ``root`` whose names start with ``prefix`` and that hold at
    least one part, oldest first (by when their first part started, then by name)."""
    root = Path(root or RECORDS_DIR)
    folders = sorted({p.parent.parent for p in parts(root) if p.parent.parent.name.startswith(prefix)})
    return sorted(folders, key=lambda f: (started(f), f.name))


def find(name: str, root: Path | None = None) -> Path | None:
    """The record called ``name`` under ``root``, or for :data:`NEWEST` the newest long
    record (``None`` when none is committed). Raises ``ValueError`` naming the records
    there for a name that holds no part."""
    root = Path(root or RECORDS_DIR)
    if name == NEWEST:
        folders = record_folders(root)
        return folders[-1] if folders else None
    folder = root / name
    if not record_parts(folder):
        known = [f.name for f in record_folders(root, prefix="")]
        raise ValueError(f"parameter record={name!r}: no record with a part under {root}; recorded: "
                         f"{known or 'none'} (or {NEWEST!r})")
    return folder


def record_profile(record: Path) -> str:
    found = [provenance(p).get("profile") for p in record_parts(record)]
    return next((p for p in found if p), "long")


def date_of(timestamp: str | None) -> str:
    """``2026-12-07`` from an ISO timestamp, "" without one."""
    return timestamp[:10] if timestamp else ""


# --- one chapter's verdicts and runs across schedules -----------------------------------

def schedule_steps(chapter: str, schedule: int, profile: str = "long", notebooks: Path | None = None) -> int:
    """``total_steps`` of a chapter's runs at a schedule (the profile's, times it)."""
    return params.resolve(chapter, profile, notebooks=notebooks)["total_steps"] * schedule


def part_state(part: Path) -> dict:
    """``{"state": "recorded" | "running" | "missing", "runs": planned, "done": stored}``."""
    part = Path(part)
    if not (part / PROVENANCE_FILE).exists():
        return {"state": "missing", "runs": 0, "done": 0}
    prov = provenance(part)
    done = len(json.loads((part / RUNS_FILE).read_text())["runs"]) if (part / RUNS_FILE).exists() else 0
    return {"state": "recorded" if prov.get("finished") else "running", "runs": prov.get("runs", 0), "done": done}


def verdicts_by_schedule(record: Path | None, schedules=SCHEDULES, notebooks: Path | None = None) -> pd.DataFrame:
    """One row per chapter, shown verdict and schedule of the record (every chapter of
    :data:`CHAPTER_CLAIMS` at every schedule, recorded or not): chapter, claim, title,
    schedule, steps, state (recorded / running / missing), the part's runs planned
    (``runs``), stored (``done``) and converged (``part_converged``), and for a recorded
    part the verdict judged again with today's rules: holds, outcome, fragile,
    conditions held (``held``) and in all, runs judged and how many of them converged."""
    profile = record_profile(record) if record else "long"
    rows = []
    for chapter, shown in CHAPTER_CLAIMS.items():
        for schedule in schedules:
            part = part_dir(record, chapter, schedule) if record else None
            state = part_state(part) if part else {"state": "missing", "runs": 0, "done": 0}
            base = {"chapter": chapter, "schedule": schedule,
                    "steps": schedule_steps(chapter, schedule, profile, notebooks), **state, "part_converged": 0}
            verdicts = {}
            if state["state"] == "recorded":
                table = run_set(part).table
                base["part_converged"] = int(table.converged.sum())
                verdicts = {v.claim: v for v in claims.JUDGES[chapter](table)}
            for claim in shown:
                v = verdicts.get(claim)
                row = {**base, "claim": claim, "title": v.title if v else "", "holds": None, "outcome": "",
                       "fragile": False, "held": 0, "conditions": 0, "judged": 0, "converged": 0}
                if v:
                    row.update(steps=max(v.steps) if v.steps else base["steps"], holds=v.holds, outcome=v.outcome,
                               fragile=v.fragile, held=sum(c.holds for c in v.conditions),
                               conditions=len(v.conditions), judged=v.runs, converged=v.converged)
                rows.append(row)
    table = pd.DataFrame(rows)
    titles = table[table.title != ""].groupby("claim").title.first()
    table["title"] = [titles.get(claim, "") for claim in table.claim]  # a claim recorded at any schedule
    return table


def cell_text(row: dict) -> str:
    """A verdict at one schedule in words: ``holds (6 of 6 conditions) at 2000 steps; 6
    of 12 runs converged``; ``not recorded yet``; ``being recorded: 6 of 12 runs so far``."""
    if row["state"] == "missing":
        return "not recorded yet"
    if row["state"] == "running":
        return f"being recorded: {row['done']} of {row['runs']} runs so far"
    fragile = ", fragile" if row["fragile"] else ""
    return (f"{row['outcome']}{fragile} ({row['held']} of {row['conditions']} conditions) at {row['steps']} steps; "
            f"{row['converged']} of {row['judged']} runs converged")


def schedule_label(schedule: int) -> str:
    return f"×{schedule}" + (" (the quick schedule)" if schedule == 1 else "")


def schedule_runs(record: Path | None, chapter: str) -> pd.DataFrame:
    """The run tables of a chapter's finished parts in one, with a ``schedule`` column
    (``total_steps`` is already one); empty without any."""
    if record is None:
        return pd.DataFrame()
    frames = [run_set(p).table.assign(schedule=int(p.name[1:])) for p in record_parts(record)
              if p.parent.name == chapter and finished(p)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def distance_to_convergence(record: Path | None, chapter: str) -> pd.DataFrame:
    """How far a chapter's runs were from converged at its longest finished schedule: one
    row per regime and swept value other than the seed (K, or mixture and width), with the
    median over seeds of each metric's relative change over the last quarter of the steps
    (the numbers :mod:`vqstudy.convergence`'s rule compares with its tolerances), the
    largest of those changes in any seed, and how many seeds converged. Empty without a
    finished part."""
    done = [p for p in record_parts(record) if p.parent.name == chapter and finished(p)] if record else []
    if not done:
        return pd.DataFrame()
    part = max(done, key=lambda p: int(p.name[1:]))
    data = json.loads((part / RUNS_FILE).read_text())["runs"]
    rows = []
    for r in data:
        judged = convergence.run_convergence(r["curves"], r["config"]["total_steps"])
        rows.append({**{k: v for k, v in r["point"].items() if k != "seed"}, "seed": r["point"].get("seed"),
                     **{f"{m}_change": judged.get(f"{m}_change", float("nan")) for m in convergence.METRICS},
                     "converged": bool(judged["converged"])})
    runs = pd.DataFrame(rows)
    keys = [k for k in data[0]["point"] if k != "seed"]
    out = []
    for values, g in runs.groupby(keys, sort=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        row.update({"schedule": int(part.name[1:]), "steps": int(data[0]["config"]["total_steps"]),
                    "seeds": len(g), "converged": int(g.converged.sum())})
        for m in convergence.METRICS:
            row[f"{m}_change"] = float(g[f"{m}_change"].median())
            row[f"{m}_largest"] = float(g[f"{m}_change"].abs().max())
        out.append(row)
    return pd.DataFrame(out)


# --- C3: pretrain's lead and baseline's gain against the schedule -------------------------

def c3_lead(runs: pd.DataFrame) -> pd.DataFrame:
    """C3's deciding numbers at each schedule, from :func:`schedule_runs` of
    cifar10_scaling: one row per schedule with steps, pretrain's lead over baseline at
    each K ≥ 512 (``lead_K``: 1 − MSE(pretrain)/MSE(baseline) of the seed means,
    :func:`vqstudy.claims.lead`), baseline's MSE gain from the smallest to the largest of
    those K (:func:`vqstudy.claims.baseline_gain`, C3b's statistic), and ``caught_up``: the
    K at which baseline's seed-mean MSE is no higher than pretrain's (lead ≤ 0)."""
    rows = []
    if runs.empty:
        return pd.DataFrame(rows)
    for schedule, table in runs.groupby("schedule"):
        large = table[table.codebook_size >= claims.LARGE_K]
        lead = claims.lead(large)
        rows.append({"schedule": int(schedule), "steps": int(table.total_steps.max()),
                     **{f"lead_{k}": float(v) for k, v in lead.items()},
                     "baseline_gain": claims.baseline_gain(large),
                     "caught_up": [int(k) for k, v in lead.items() if v <= 0]})
    return pd.DataFrame(rows)


def c3_lead_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Pretrain's lead in each seed alone (schedule, steps, seed, codebook_size, lead):
    the spread behind :func:`c3_lead`'s seed-mean values."""
    rows = []
    if runs.empty:
        return pd.DataFrame(rows)
    large = runs[runs.codebook_size >= claims.LARGE_K]
    for (schedule, seed), table in large.groupby(["schedule", "seed"]):
        for k, v in claims.lead(table).items():
            rows.append({"schedule": int(schedule), "steps": int(table.total_steps.max()), "seed": seed,
                         "codebook_size": int(k), "lead": float(v)})
    return pd.DataFrame(rows)


def catch_up_text(lead: pd.DataFrame) -> str:
    """Where baseline catches up with pretrain (its seed-mean MSE no higher), in words."""
    if lead.empty:
        return "C3 is not recorded yet: nothing to say about where baseline catches up."
    found = [f"at K = {', '.join(map(str, r.caught_up))} from {r.steps} steps (×{r.schedule})"
             for r in lead.itertuples() if r.caught_up]
    if not found:
        longest = lead.iloc[-1]
        return (f"Baseline catches up nowhere: at every K ≥ {claims.LARGE_K} and every recorded schedule up to "
                f"{longest.steps} steps (×{longest.schedule}), pretrain's test MSE stays below baseline's.")
    return "Baseline's test MSE is no higher than pretrain's " + found[0] + "."


# --- what holds as training converges -----------------------------------------------------

def convergence_statement(table: pd.DataFrame) -> str:
    """Which verdicts hold as training converges and which belong to the short schedule,
    from :func:`verdicts_by_schedule`, as Markdown: for each claim, its outcome at the
    quick schedule (×1) and at the longest recorded one, with how many runs converged."""
    done = table[table.state == "recorded"]
    if done.empty:
        return "No part of a long-schedule record is finished yet: no verdict can be followed along the schedule."
    groups = {"stable_holds": [], "stable_fails": [], "short_holds": [], "short_fails": [], "unsettled": [],
              "single": [], "missing": []}
    for claim, rows in table.groupby("claim", sort=False):
        recorded = rows[rows.state == "recorded"].sort_values("schedule")
        if recorded.empty:
            groups["missing"].append(claim)
            continue
        first, last = recorded.iloc[0], recorded.iloc[-1]
        where = (f"**{claim}** ({last.outcome} at {last.steps} steps, ×{last.schedule}; {last.converged} of "
                 f"{last.judged} runs converged there)")
        if len(recorded) == 1 or first.schedule != 1:
            groups["single"].append(f"**{claim}** ({last.outcome} at ×{last.schedule} only, {last.steps} steps)")
        elif all(recorded.holds) or not any(recorded.holds):
            groups["stable_holds" if last.holds else "stable_fails"].append(where)
        elif first.holds == last.holds:
            groups["unsettled"].append(f"**{claim}** (" + ", ".join(f"{r.outcome} at ×{r.schedule}"
                                                                    for r in recorded.itertuples()) + ")")
        else:
            groups["short_holds" if first.holds else "short_fails"].append(
                f"**{claim}** ({first.outcome} at ×1, {first.steps} steps; {last.outcome} at ×{last.schedule}, "
                f"{last.steps} steps; {last.converged} of {last.judged} runs converged there)")
    lines = []
    texts = {"stable_holds": "Hold as training gets longer: at every recorded schedule, the longest included",
             "stable_fails": "Do not hold at any recorded schedule",
             "short_holds": "Belong to the short schedule: hold at the quick schedule, not at the longest recorded",
             "short_fails": "Fail at the quick schedule, hold at the longest recorded",
             "unsettled": "Change more than once between schedules",
             "single": "Recorded at one schedule so far, nothing to compare yet",
             "missing": "Not recorded yet"}
    for key, text in texts.items():
        if groups[key]:
            lines.append(f"- *{text}:* " + "; ".join(groups[key]) + ".")
    last_parts = done.sort_values("schedule").groupby("chapter", sort=False).last()
    c, n = int(last_parts.part_converged.sum()), int(last_parts.done.sum())
    where = ", ".join(f"{CHAPTER_SHORT[ch]} ×{r.schedule}" for ch, r in last_parts.iterrows())
    note = (f"At each chapter's longest recorded schedule ({where}), {c} of {n} runs had converged by the rule "
            "above")
    note += (": the rest were still moving, so a longer schedule could still move a verdict." if c < n else
             ": every run was at rest.")
    return "\n".join(lines + ["", note])


# --- the record in words ---------------------------------------------------------------------

# The swept parameter that decides each recorded chapter's claims, and its name in prose.
DECIDING = {"tokens_collapse": ("codebook_size", "K"), "embeddings_collapse": ("hidden", "encoder width"),
            "cifar10_scaling": ("codebook_size", "K")}


def sub_sweeps(record: Path | None, notebooks: Path | None = None) -> str:
    """``C1: K = 64, 1024; C2 and C2h: encoder width = 2, 16, 256 (mixtures standard,
    harder); C3: K = 512, 2048, 8192; seeds 0, 1, 2``: what the record's profile sweeps."""
    profile = record_profile(record) if record else "long"
    texts, seeds = [], set()
    for chapter, (name, words) in DECIDING.items():
        P = params.resolve(chapter, profile, notebooks=notebooks)
        seeds |= set(P.get("seed", []))
        mixtures = f" (mixtures {', '.join(P['mixture'])})" if isinstance(P.get("mixture"), dict) else ""
        who = " and ".join(CHAPTER_CLAIMS[chapter]) if chapter == "embeddings_collapse" else CHAPTER_SHORT[chapter]
        texts.append(f"{who}: {words} = {', '.join(map(str, P[name]))}{mixtures}")
    return "; ".join(texts) + f"; seeds {', '.join(map(str, sorted(seeds)))}"


# --- the times of each part -----------------------------------------------------------------

def wall_text(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "—"
    hours, rest = divmod(round(float(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s")


def timings(record: Path | None) -> pd.DataFrame:
    """One row per part of the record, from its provenance: chapter, schedule, steps,
    runs, state, wall time (sweep + notebook) of the sitting that finished it and how many
    sittings the part took (a part resumed after an interruption: the earlier sittings' wall
    time is not known), the training time summed over its runs (whole, whatever the
    sittings), workers and cores, CPU, commit, dates."""
    rows = []
    for part in record_parts(record) if record else []:
        prov, state = provenance(part), part_state(part)
        runs = json.loads((part / RUNS_FILE).read_text()).get("runs", []) if (part / RUNS_FILE).exists() else []
        rows.append({"chapter": part.parent.name, "schedule": int(part.name[1:]),
                     # training time summed over the runs: each run's own, so whole across sittings
                     "run_seconds": sum(r.get("seconds") or 0 for r in runs), "sittings": prov.get("sittings", 1),
                     "first_started": prov.get("first_started") or prov.get("started") or "",
                     "steps": prov.get("parameters", {}).get("total_steps"), "runs": prov.get("runs"),
                     "state": state["state"], "wall_seconds": prov.get("wall_seconds"),
                     "sweep_seconds": prov.get("sweep_seconds"), "notebook_seconds": prov.get("notebook_seconds"),
                     "workers": prov.get("workers"), "cores": prov.get("cores"),
                     "torch_threads": prov.get("torch_threads"), "cpu": prov.get("cpu", ""),
                     "commit": (prov.get("commit") or "")[:7], "started": prov.get("started") or "",
                     "finished": prov.get("finished") or ""})
    order = list(CHAPTER_CLAIMS)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["chapter", "schedule"], key=lambda s: s.map(order.index) if s.name == "chapter"
                                  else s).reset_index(drop=True)
    return table


def machine_text(times: pd.DataFrame) -> str:
    """Where the parts ran, from their provenance: ``AMD EPYC, 2 cores, 2 worker
    processes of 1 torch thread each, commit 5a14680`` (every value the parts differ in)."""
    if times.empty:
        return "no part recorded"

    def values(column):
        return ", ".join(str(v) for v in dict.fromkeys(times[column]) if v not in (None, ""))

    threads = values("torch_threads")
    return (f"{values('cpu')}, {values('cores')} cores, {values('workers')} worker processes of {threads} torch "
            f"thread{'' if threads == '1' else 's'} each, commit {values('commit')}")


# --- for the scorecard ------------------------------------------------------------------------

def longest_verdicts(root: Path | None = None) -> dict:
    """The newest long record's verdicts at each chapter's longest finished schedule, for
    the scorecard: ``{"record", "date", "verdicts": {claim: verdict dict with "schedule"}}``
    (verdicts as :meth:`vqstudy.claims.Verdict.to_dict`, judged again with today's
    rules); ``{}`` when no long record has a finished part."""
    record = find(NEWEST, root)
    if record is None:
        return {}
    verdicts = {}
    for chapter in CHAPTER_CLAIMS:
        done = [p for p in record_parts(record) if p.parent.name == chapter and finished(p)]
        if not done:
            continue
        longest = max(done, key=lambda p: int(p.name[1:]))
        for v in rejudge(longest):
            verdicts[v.claim] = {**v.to_dict(), "schedule": int(longest.name[1:]),
                                 "date": date_of(provenance(longest).get("finished"))}
    if not verdicts:
        return {}
    return {"record": record.name, "date": date_of(started(record)), "verdicts": verdicts}


def stored_runs(record: Path, configs: list, points: list[dict]) -> RunSet:
    """The runs of ``record`` (any of its parts) trained with exactly ``configs``, as a
    :class:`RunSet` with the swept ``points``: a chapter takes them instead of training the
    same configurations again (the same configuration is one run). A stored configuration
    that predates a training setting is read with that setting at its default, which is what
    it trained with. Raises ``ValueError`` naming the first configuration the record lacks."""
    import dataclasses

    from vqstudy.training import Config

    def key(cfg: Config) -> str:
        return repr(sorted(dataclasses.asdict(cfg).items()))

    stored = {}
    for part in record_parts(Path(record)):
        for run in json.loads((part / RUNS_FILE).read_text())["runs"]:
            stored.setdefault(key(Config.from_dict(run["config"])), run)
    found = []
    for cfg, point in zip(configs, points):
        run = stored.get(key(cfg))
        if run is None:
            raise ValueError(f"record {Path(record).name} holds no run trained with {point} "
                             f"(total_steps={cfg.total_steps}, pretrain_steps={cfg.pretrain_steps}, "
                             f"codebook_size={cfg.codebook_size}, seed={cfg.seed}); its parts: "
                             f"{[f'{p.parent.name}/{p.name}' for p in record_parts(Path(record))]}")
        found.append(run)
    return RunSet(points, found)
