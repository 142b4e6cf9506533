"""The pages made from the recorded verdicts: the scorecard, the introduction's summary
and the rule log. Each is a pure function of the verdicts it is given (the runner reads
them, in the order and parts of ``_toc.yml``), so no page can disagree with a chapter,
and nothing on them is typed by hand.

Made to be read at a glance: every verdict is a coloured badge (holds / does not hold /
no verdict; sphinx-design, bundled with Jupyter Book 1: no network needed) followed by
its headline, one plain sentence with the key number; on the scorecard each verdict is a
card (``book/_static/vqstudy.css`` colours its edge) with the claim, the rule, the failed
conditions, and links to the chapter and to its verdict JSON. Cards and lists wrap at any
page width, where a wide table would be clipped.

A chapter whose verdicts are missing (its notebook failed, or was not executed) gets a
card that says so.
"""

from typing import NamedTuple


class Entry(NamedTuple):
    name: str                  # the chapter: book/claims/NAME
    verdicts: list | None      # as recorded (claims.read), None when missing
    executed: bool             # whether book/claims/NAME.ipynb exists


BADGES = {"holds": "{bdg-success}`holds`", "does not hold": "{bdg-danger}`does not hold`",
          None: "{bdg-secondary}`no verdict`"}
CARD_CLASSES = {"holds": "vq-holds", "does not hold": "vq-fails", None: "vq-none"}

# The introduction opens with the summary and one figure: this chapter's lead figure,
# which its notebook saves beside the executed notebook (``plots.save_lead``) before it
# records its verdicts, so a chapter that recorded verdicts has it.
LEAD_CHAPTER = "tokens_collapse"
LEAD_CAPTION = ("Tokens collapse (C1) at the largest codebook, first seed: evaluation embeddings coloured by "
                "class, tokens in use as crosses, dead tokens as circles; top row baseline (K-means on the "
                "untrained encoder), bottom row pretrain (autoencoder first); left at the start of quantization, "
                "right after training; all four panels on the same axes, with a magnified inset where the "
                "points are too small to see. The chapter has the numbers.")


def lead_figure(notebook: str) -> str:
    """The file name of a chapter's lead figure, beside its executed notebook."""
    return f"{notebook}.lead.png"


def outcome(verdict: dict | None) -> str | None:
    return None if verdict is None else ("holds" if verdict["holds"] else "does not hold")


def badge(verdict: dict | None) -> str:
    return BADGES[outcome(verdict)]


def shown(entry: Entry) -> list[dict]:
    """The verdicts a chapter shows on the scorecard (superseded rules are on the rule log)."""
    return [v for v in entry.verdicts or [] if v.get("role", "claim") != "superseded"]


def chapter_link(entry: Entry, folder: str = "", text: str = "") -> str:
    if not entry.executed:
        return f"`notebooks/{entry.name}.ipynb` (not executed)"
    return f"{{doc}}`{text} <{folder}{entry.name}>`" if text else f"{{doc}}`{folder}{entry.name}`"


def json_link(entry: Entry, folder: str = "") -> str:
    return f"{{download}}`verdict JSON <{folder}{entry.name}.verdict.json>`"


def seeds_text(seeds: list) -> str:
    """``seeds 0, 1, 2 (n = 3)``."""
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))} (n = {len(seeds)})"


def counts(sections) -> tuple[int, int, int]:
    """(holding, judged, missing) over every verdict the sections show."""
    verdicts = [v for _, entries in sections for e in entries for v in shown(e)]
    missing = sum(1 for _, entries in sections for e in entries if e.verdicts is None)
    return sum(v["holds"] for v in verdicts), len(verdicts), missing


def tally(sections) -> str:
    """``**3 of 5 verdicts hold**`` at the profile and seeds they share, and how many
    chapters recorded none."""
    held, judged, missing = counts(sections)
    verdicts = [v for _, entries in sections for e in entries for v in shown(e)]
    profiles = sorted({v.get("profile", "") for v in verdicts})
    seeds = sorted({tuple(v.get("seeds", [])) for v in verdicts})
    where = f" at profile `{profiles[0]}`" if len(profiles) == 1 and profiles[0] else ""
    if len(seeds) == 1 and seeds[0]:
        where += f", {seeds_text(list(seeds[0]))}"
    return (f"**{held} of {judged} verdict{'s' if judged != 1 else ''} hold**{where}"
            + (f"; {missing} chapter{'s' if missing != 1 else ''} recorded none" if missing else ""))


def card(lines: list[str], css: str) -> list[str]:
    """A sphinx-design card: header (first line), body, footer (last line)."""
    return ["`````{card}", f":class-card: vq-card {css}", "", "````{card-header}", lines[0], "````", "",
            *lines[1:-1], "", "````{card-footer}", lines[-1], "````", "`````", ""]


def cards_of(entry: Entry) -> list[str]:
    chapter = chapter_link(entry, text="Chapter") if entry.executed else chapter_link(entry)
    if entry.verdicts is None:  # no verdict file to link to (a link to it would fail the build)
        return card([f"{badge(None)} **{entry.name}**",
                     "The notebook failed or was not executed: no verdict was recorded. See the build log"
                     + (" and the chapter." if entry.executed else "."), "", chapter], CARD_CLASSES[None])
    links = f"{chapter} · {json_link(entry)}"
    lines = []
    for v in shown(entry):
        failing = [c for c in v["conditions"] if not c["holds"]]
        held = len(v["conditions"]) - len(failing)
        body = [f"**{v['headline']}**" if v.get("headline") else "", "",
                f"{held} of {len(v['conditions'])} conditions hold · profile `{v['profile']}` · "
                f"{seeds_text(v['seeds'])}", ""]
        if v.get("statement"):
            body += [f"*The claim.* {v['statement']}", ""]
        body += [f"*The rule.* {v['rule']}", ""]
        if failing:
            body += ["*Fails:*", ""] + [f"- ✗ {c['name']}: {c['detail']}" for c in failing] + [""]
        lines += card([f"{badge(v)} **{v['claim']}** · {v['title']}", *body, links], CARD_CLASSES[outcome(v)])
    return lines


def page(sections: list[tuple[str, list[Entry]]], date: str) -> str:
    """The scorecard: a card per verdict, under the parts of the book."""
    lines = ["# Scorecard", "",
             f"{tally(sections)}. Generated from the verdicts the chapters recorded when the book was built "
             f"({date}); nothing here is typed by hand. Each rule was fixed before its runs and is checked in "
             "every seed; a changed rule is on the {doc}`rule_log`, with its old verdict.", ""]
    for caption, entries in sections:
        if caption:
            held, judged, missing = counts([(caption, entries)])
            lines += [f"## {caption}", "", f"{held} of {judged} hold in this part"
                      + (f"; {missing} chapter{'s' if missing != 1 else ''} recorded none." if missing else "."), ""]
        for e in entries:
            lines += cards_of(e)
    return "\n".join(lines)


def summary(sections: list[tuple[str, list[Entry]]]) -> str:
    """The introduction's results (included by ``book/intro.md``, so links are relative
    to ``book/``): one line per verdict, badge first, then the lead figure."""
    lines = [f"{tally(sections)}; the {{doc}}`claims/scorecard` has the rules and every number.", ""]
    for caption, entries in sections:
        if caption and len(sections) > 1:
            held, judged, _ = counts([(caption, entries)])
            lines += [f"**{caption}** ({held} of {judged} hold)", ""]
        for e in entries:
            if e.verdicts is None:
                lines.append(f"- {badge(None)} **{e.name}**: no verdict recorded ({chapter_link(e, 'claims/')}).")
            for v in shown(e):
                lines.append(f"- {badge(v)} **{v['claim']} · {v['title']}.** {v.get('headline') or ''} "
                             f"({chapter_link(e, 'claims/', 'chapter')}, {json_link(e, 'claims/')})")
        lines.append("")
    lead = [e for _, entries in sections for e in entries if e.name == LEAD_CHAPTER and e.verdicts is not None]
    if lead:
        lines += ["```{figure} " + f"claims/{lead_figure(LEAD_CHAPTER)}", ":width: 100%",
                  f":alt: {LEAD_CAPTION}", "", LEAD_CAPTION, "```", ""]
    return "\n".join(lines)


def rule_log(sections: list[tuple[str, list[Entry]]], changes: list) -> str:
    """Every change of a rule: date, old rule, new rule(s), why, and the verdict under
    each on the same runs (the old rule is computed on every build, never dropped)."""
    by_claim = {v["claim"]: (v, e) for _, entries in sections for e in entries for v in e.verdicts or []}
    lines = ["# Rule log", "",
             "A rule is fixed before its runs. When one changes, the change is recorded here with the reason, "
             "and the old rule keeps being computed on the same runs as the new one, so both verdicts stay "
             "visible.", ""]
    for change in changes:
        lines += [f"## {change.date}: {change.old} → {', '.join(change.new)}", "", f"**Why.** {change.why}", ""]
        for claim in [change.old] + change.new:
            v, e = by_claim.get(claim, (None, None))
            label = "Old rule" if claim == change.old else "New rule"
            if v is None:
                lines += [f"**{label} ({claim}).** {badge(None)} not recorded in this build.", ""]
                continue
            failing = [c["name"] for c in v["conditions"] if not c["holds"]]
            lines += [f"**{label} ({claim}, {chapter_link(e)}).** {v['rule']}", "",
                      f"Verdict on this build's runs (`{v['profile']}`, {seeds_text(v['seeds'])}): "
                      f"{badge(v)}" + (f"; fails: {'; '.join(failing)}." if failing else "."), ""]
    return "\n".join(lines)
