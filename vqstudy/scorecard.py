"""The scorecard: the book's first page after the introduction, one row per claim.

It is generated, never typed: each row comes from the verdict a chapter recorded
(``book/claims/<notebook>.verdict.json``, see :func:`vqstudy.claims.record`), in the
order of ``_toc.yml``, so it cannot disagree with the chapters. A chapter whose verdict
is missing (its notebook failed, or was not executed) gets a row that says so.
:func:`write` runs after the notebooks, before the HTML build
(:func:`vqstudy.runner.build_book`); the page lands in ``book/claims/`` (a build product).
"""

import datetime
import re
from pathlib import Path

import nbformat

from vqstudy import runner
from vqstudy.params import REPO_ROOT

NAME = "scorecard"  # book/claims/scorecard.md, listed in _toc.yml right after the root


def paper_claim_from_notebook(name: str, root: Path = REPO_ROOT) -> str:
    """Fallback for a verdict without ``statement``: the chapter's "**The paper's claim.**"
    paragraph, from the source notebook."""
    path = root / "notebooks" / f"{name}.ipynb"
    if not path.exists():
        return ""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            found = re.search(r"\*\*The paper's claim\.\*\*(.*?)(\n\s*\n|$)", cell.source, re.S)
            if found:
                return " ".join(found.group(1).split())
    return ""


def number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.3g}"


def key_numbers(numbers: dict) -> list[str]:
    """``numbers`` of a verdict, compact, one item each: ``x_baseline`` and ``x_pretrain``
    become ``x: baseline ..., pretrain ...``; the rest ``name = value``."""
    items, done = [], set()
    for key, value in numbers.items():
        if key in done:
            continue
        base, _, regime = key.rpartition("_")
        if regime in ("baseline", "pretrain") and base:
            pair = {r: numbers[f"{base}_{r}"] for r in ("baseline", "pretrain") if f"{base}_{r}" in numbers}
            done.update(f"{base}_{r}" for r in pair)
            items.append(f"{base.replace('_', ' ')}: " + ", ".join(f"{r} {number(v)}" for r, v in pair.items()))
        else:
            items.append(f"{key.replace('_', ' ')} = {number(value)}")
    return items


MISSING = "no verdict"  # the verdict cell of a chapter whose notebook failed or did not run


def row(name: str, root: Path = REPO_ROOT) -> dict:
    """One claim's row, as lists of paragraphs per column: from its verdict, or a row that
    says the verdict is missing."""
    verdict = runner.read_verdict(name, root)
    executed = (root / runner.EXECUTED_DIR / f"{name}.ipynb").exists()
    chapter = f"{{doc}}`{name}`" if executed else f"`notebooks/{name}.ipynb` (not executed)"
    if verdict is None:
        return {"claim": [f"**{name}**", chapter],
                "statement": [paper_claim_from_notebook(name, root) or "—"],
                "verdict": [f"**{MISSING}**: the notebook failed or was not executed; see the build log"
                            + (" and the chapter." if executed else ".")],
                "run": ["—"]}
    conditions = verdict["conditions"]
    failing = [c["name"] for c in conditions if not c["holds"]]
    outcome = (f"**{'holds' if verdict['holds'] else 'does not hold'}** "
               f"({len(conditions) - len(failing)} of {len(conditions)} conditions)")
    return {"claim": [f"**{verdict['claim']}**", chapter],
            "statement": [verdict.get("statement") or paper_claim_from_notebook(name, root) or verdict["title"],
                          f"*Rule:* {verdict['rule']}"],
            "verdict": [outcome] + [f"*Fails:* {c}" for c in failing] + [" \\\n".join(key_numbers(verdict["numbers"]))],
            "run": [f"`{verdict['profile']}`", f"seeds {', '.join(map(str, verdict['seeds']))}"]}


COLUMNS = [("claim", "Claim", 14), ("statement", "The paper's claim, and the rule that checks it", 46),
           ("verdict", "Verdict and key numbers", 30), ("run", "Profile, seeds", 10)]


def cell(paragraphs: list[str]) -> str:
    """A list-table cell: its paragraphs, continuation lines indented under the item."""
    text = "\n\n".join(p.strip() for p in paragraphs if p.strip())
    return "\n".join(("    " + line) if line and i else line for i, line in enumerate(text.split("\n")))


def render(rows: list[dict], date: str) -> str:
    held = sum(r["verdict"][0].startswith("**holds**") for r in rows)
    lines = [
        "# Scorecard", "",
        f"Every claim of the study, one row each: **{held} of {len(rows)} hold**. Each row is generated from "
        "the verdict its chapter recorded (`book/claims/<notebook>.verdict.json`) when the book was built "
        f"({date}); nothing here is typed by hand. Each rule was fixed before its numbers were computed and is "
        "checked in every seed; the key numbers are the ones the verdict records, explained in the chapter.", "",
        "```{list-table}", ":header-rows: 1", ":class: scorecard",
        ":widths: " + " ".join(str(w) for _, _, w in COLUMNS), "",
        "* - " + "\n  - ".join(title for _, title, _ in COLUMNS),
    ]
    for r in rows:
        lines.append("* - " + "\n  - ".join(cell(r[key]) for key, _, _ in COLUMNS))
    lines += ["```", ""]
    return "\n".join(lines)


def write(root: Path = REPO_ROOT) -> Path:
    """Write ``book/claims/scorecard.md`` from the verdicts of every chapter in ``_toc.yml``."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path = root / runner.EXECUTED_DIR / f"{NAME}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render([row(name, root) for name in runner.executed_notebooks(root)], date))
    return path
