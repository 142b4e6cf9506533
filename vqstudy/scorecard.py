"""The pages made from the recorded verdicts: the scorecard, the introduction's summary
and the rule log. Each is a pure function of the verdicts it is given (the runner reads
them, in the order and parts of ``_toc.yml``), so no page can disagree with a chapter,
and nothing on them is typed by hand.

A chapter whose verdicts are missing (its notebook failed, or was not executed) gets a
row that says so. Verdicts are shown with a coloured badge (sphinx-design, bundled with
Jupyter Book 1: no network needed).
"""

from typing import NamedTuple


class Entry(NamedTuple):
    name: str                  # the chapter: book/claims/NAME
    verdicts: list | None      # as recorded (claims.read), None when missing
    executed: bool             # whether book/claims/NAME.ipynb exists


BADGES = {"holds": "{bdg-success}`holds`", "does not hold": "{bdg-danger}`does not hold`",
          None: "{bdg-secondary}`no verdict`"}


def badge(verdict: dict | None) -> str:
    return BADGES[None if verdict is None else ("holds" if verdict["holds"] else "does not hold")]


def shown(entry: Entry) -> list[dict]:
    """The verdicts a chapter shows on the scorecard (superseded rules are on the rule log)."""
    return [v for v in entry.verdicts or [] if v.get("role", "claim") != "superseded"]


def chapter_link(entry: Entry, folder: str = "") -> str:
    return f"{{doc}}`{folder}{entry.name}`" if entry.executed else f"`notebooks/{entry.name}.ipynb` (not executed)"


def cell(paragraphs: list[str]) -> str:
    """A list-table cell: its paragraphs, continuation lines indented under the item."""
    text = "\n\n".join(p.strip() for p in paragraphs if p and p.strip())
    return "\n".join(("    " + line) if line and i else line for i, line in enumerate(text.split("\n")))


def list_table(header: list[str], rows: list[list[list[str]]], widths: list[int], css: str) -> list[str]:
    lines = ["```{list-table}", ":header-rows: 1", f":class: {css}", ":widths: " + " ".join(map(str, widths)), "",
             "* - " + "\n  - ".join(header)]
    lines += ["* - " + "\n  - ".join(cell(c) for c in row) for row in rows]
    return lines + ["```", ""]


def counts(sections) -> tuple[int, int, int]:
    """(holding, judged, missing) over every verdict the sections show."""
    verdicts = [v for _, entries in sections for e in entries for v in shown(e)]
    missing = sum(1 for _, entries in sections for e in entries if e.verdicts is None)
    return sum(v["holds"] for v in verdicts), len(verdicts), missing


def rows_of(entry: Entry) -> list[list[list[str]]]:
    json_link = f"{{download}}`verdict JSON <{entry.name}.verdict.json>`"
    if entry.verdicts is None:
        return [[[f"**{entry.name}**", chapter_link(entry)], ["—"],
                 [badge(None), "the notebook failed or was not executed; see the build log"
                  + (" and the chapter." if entry.executed else ".")], ["—"]]]
    rows = []
    for v in shown(entry):
        failing = [c for c in v["conditions"] if not c["holds"]]
        held = len(v["conditions"]) - len(failing)
        rows.append([
            [f"**{v['claim']}**", v["title"], chapter_link(entry), json_link],
            [v.get("statement") or "", f"*Rule:* {v['rule']}"],
            [f"{badge(v)} {held} of {len(v['conditions'])} conditions", v.get("headline") or ""]
            + [f"*Fails:* {c['name']}: {c['detail']}" for c in failing],
            [f"`{v['profile']}`", f"seeds {', '.join(map(str, v['seeds']))}"]])
    return rows


def page(sections: list[tuple[str, list[Entry]]], date: str) -> str:
    """The scorecard: one table per part of the book, one row per verdict."""
    held, judged, missing = counts(sections)
    lines = ["# Scorecard", "",
             f"**{held} of {judged} verdicts hold**" + (f"; {missing} chapter(s) recorded none" if missing else "")
             + f". Generated from the verdicts the chapters recorded when the book was built ({date}); nothing "
             "here is typed by hand. Each rule was fixed before its runs and is checked in every seed; a changed "
             "rule is on the {doc}`rule_log`, with its old verdict.", ""]
    for caption, entries in sections:
        if caption:
            lines += [f"## {caption}", ""]
        rows = [row for e in entries for row in rows_of(e)]
        lines += list_table(["Claim", "What is tested, and the rule", "Verdict", "Profile, seeds"], rows,
                            [16, 44, 30, 10], "scorecard")
    return "\n".join(lines)


def summary(sections: list[tuple[str, list[Entry]]]) -> str:
    """The introduction's table of results (included by ``book/intro.md``)."""
    held, judged, missing = counts(sections)
    lines = [f"**{held} of {judged} verdicts hold** at the profile this book was built with"
             + (f" ({missing} chapter(s) recorded none)" if missing else "") + "; the {doc}`claims/scorecard` "
             "has the rules and every number.", ""]
    rows = []
    for _, entries in sections:
        for e in entries:
            if e.verdicts is None:
                rows.append([[f"**{e.name}**"], [chapter_link(e, "claims/")], [badge(None)]])
            for v in shown(e):
                rows.append([[f"**{v['claim']}** {v['title']}"], [chapter_link(e, "claims/")],
                             [badge(v), v.get("headline") or ""]])
    return "\n".join(list_table(["Claim", "Chapter", "Result"], rows, [35, 20, 45], "summary"))


def rule_log(sections: list[tuple[str, list[Entry]]], changes: list) -> str:
    """Every change of a rule: date, old rule, new rule(s), why, and the verdict under
    each on the same runs (the old rule is computed on every build, never dropped)."""
    by_claim = {v["claim"]: (v, e) for _, entries in sections for e in entries for v in e.verdicts or []}
    lines = ["# Rule log", "",
             "A rule is fixed before its runs. When one changes, the change is recorded here with the reason, "
             "and the old rule keeps being computed on the same runs as the new one, so both verdicts stay "
             "visible.", ""]
    for change in changes:
        old, entry = by_claim.get(change.old, (None, None))
        lines += [f"## {change.date}: {change.old} → {', '.join(change.new)}", "", f"**Why.** {change.why}", ""]
        for claim in [change.old] + change.new:
            v, e = by_claim.get(claim, (None, None))
            label = "Old rule" if claim == change.old else "New rule"
            if v is None:
                lines += [f"**{label} ({claim}).** {badge(None)} not recorded in this build.", ""]
                continue
            failing = [c["name"] for c in v["conditions"] if not c["holds"]]
            lines += [f"**{label} ({claim}, {chapter_link(e)}).** {v['rule']}", "",
                      f"Verdict on this build's runs (`{v['profile']}`, seeds {', '.join(map(str, v['seeds']))}): "
                      f"{badge(v)}" + (f"; fails: {'; '.join(failing)}." if failing else "."), ""]
    return "\n".join(lines)
