"""The pages made from the recorded verdicts: the scorecard, the introduction's summary
and the rule log. Each is a pure function of the data it is given (the runner reads the
verdicts in book order, the rule changes and the newest long-schedule record), so no page
can disagree with a chapter, and nothing on them is typed by hand.

Made to be read at a glance: every verdict is a coloured badge (holds / does not hold /
no verdict, with ", fragile" when one seed or floating-point noise could flip it;
sphinx-design, bundled with Jupyter Book 1: no network needed) followed by its headline,
one plain sentence with the key number; on the scorecard each verdict is a card
(``book/_static/vqstudy.css`` colours its edge) with the schedule it was judged at and how
many of its runs converged, the verdict at the longest recorded schedule beside it, the
claim, the rule (and the earlier rule it replaced, with that rule's verdict), the failed
conditions, and links to the chapter and to its verdict JSON. Cards and lists wrap at any
page width, where a wide table would be clipped.

The verdicts are shown in two parts, whatever part of the book their chapter is in: the
paper's claims (:data:`PAPER_CLAIMS`) and the study's own readings and findings (every
other verdict that is not a superseded rule). A chapter whose verdicts are missing (its
notebook failed, or was not executed) gets a card that says so; a chapter that records no
verdict of its own (it renders a record) is named at the end.
"""

from typing import NamedTuple


class Entry(NamedTuple):
    name: str                  # the chapter: book/claims/NAME
    verdicts: list | None      # as recorded (claims.read), None when missing
    executed: bool             # whether book/claims/NAME.ipynb exists
    part: str = ""             # the _toc.yml part the chapter is in


# The two parts of the scorecard and the summary: the paper's own claims, then everything the
# study reads into them or finds beyond them (C2h, C3b, every finding).
PAPER_CLAIMS = ("C1", "C2", "C3a")
PARTS = ("The paper's claims", "The study's own readings and findings")

BADGE_COLOURS = {"holds": "success", "does not hold": "danger", None: "secondary"}
CARD_CLASSES = {"holds": "vq-holds", "does not hold": "vq-fails", None: "vq-none"}

# The introduction opens with the summary and one figure: this chapter's lead figure,
# which its notebook saves beside the executed notebook (``plots.save_lead``) before it
# records its verdicts, so a chapter that recorded verdicts has it.
LEAD_CHAPTER = "tokens_collapse"
LEAD_CAPTION = ("Tokens collapse (C1) at the largest codebook, first seed: evaluation embeddings coloured by "
                "class, tokens in use as black crosses, dead tokens as hollow circles; top row baseline (K-means "
                "on the untrained encoder), bottom row pretrain (autoencoder first); left at the start of "
                "quantization, right after training; all four panels on the same axes, with a magnified inset "
                "where the points are too small to see. Look at where each row's tokens start and how many of "
                "them end as circles: each panel's title gives its perplexity and dead tokens, the chapter the "
                "numbers over all seeds.")


def lead_figure(notebook: str) -> str:
    """The file name of a chapter's lead figure, beside its executed notebook."""
    return f"{notebook}.lead.png"


def outcome(verdict: dict | None) -> str | None:
    return None if verdict is None else ("holds" if verdict["holds"] else "does not hold")


def outcome_text(verdict: dict | None) -> str:
    """``holds``, ``does not hold, fragile``, ``no verdict``."""
    if verdict is None:
        return "no verdict"
    return outcome(verdict) + (", fragile" if verdict.get("fragile") else "")


def badge(verdict: dict | None) -> str:
    return f"{{bdg-{BADGE_COLOURS[outcome(verdict)]}}}`{outcome_text(verdict)}`"


def steps_text(steps: list) -> str:
    """``1000 steps``, or ``1000–4000 steps`` for runs of several lengths."""
    return f"{steps[0]} steps" if len(steps) == 1 else f"{min(steps)}–{max(steps)} steps"


def schedule_text(verdict: dict) -> str:
    """``at 1000 steps; 4 of 30 runs converged`` from the verdict's ``steps``, ``runs``
    and ``converged`` (the verdict's own ``schedule_text`` where it recorded one, which also
    says how many runs had no curves to tell); "" when it does not say."""
    if verdict.get("schedule_text"):
        return verdict["schedule_text"]
    if not verdict.get("steps") or not verdict.get("runs"):
        return ""
    return f"at {steps_text(verdict['steps'])}; {verdict.get('converged', 0)} of {verdict['runs']} runs converged"


def verdict_words(verdict: dict) -> str:
    """``holds at 1000 steps; 4 of 30 runs converged`` (``, fragile`` after the outcome
    when it is)."""
    where = schedule_text(verdict)
    return outcome_text(verdict) + (f" {where}" if where else "")


def shown(entry: Entry) -> list[dict]:
    """The verdicts a chapter shows on the scorecard (superseded rules are on the rule log)."""
    return [v for v in entry.verdicts or [] if v.get("role", "claim") != "superseded"]


def is_paper_claim(verdict: dict, paper=PAPER_CLAIMS) -> bool:
    return verdict["claim"] in paper and verdict.get("role", "claim") == "claim"


def parts(entries: list[Entry], paper=PAPER_CLAIMS) -> list[tuple[str, list[tuple[Entry, dict | None]]]]:
    """``[(caption, [(entry, verdict), ...]), ...]`` for the two :data:`PARTS`, in book
    order, leaving out a part with nothing in it. A chapter that recorded no verdicts
    (``verdict`` None) goes to the first part when the book lists it under that part's
    caption, else to the second."""
    found = {caption: [] for caption in PARTS}
    for e in entries:
        if e.verdicts is None:
            found[PARTS[0] if e.part == PARTS[0] else PARTS[1]].append((e, None))
        for v in shown(e):
            found[PARTS[0] if is_paper_claim(v, paper) else PARTS[1]].append((e, v))
    return [(caption, items) for caption, items in found.items() if items]


def without_verdicts(entries: list[Entry]) -> list[Entry]:
    """Executed chapters that recorded an empty list of verdicts: they judge nothing of
    their own (the chapter that renders a long-schedule record)."""
    return [e for e in entries if e.verdicts is not None and not shown(e) and e.executed]


def chapter_link(entry: Entry, folder: str = "", text: str = "") -> str:
    if not entry.executed:
        return f"`notebooks/{entry.name}.ipynb` (not executed)"
    return f"{{doc}}`{text} <{folder}{entry.name}>`" if text else f"{{doc}}`{folder}{entry.name}`"


def json_link(entry: Entry, folder: str = "") -> str:
    return f"{{download}}`verdict JSON <{folder}{entry.name}.verdict.json>`"


def seeds_text(seeds: list) -> str:
    """``seeds 0, 1, 2 (n = 3)``."""
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))} (n = {len(seeds)})"


def counts(items) -> tuple[int, int, int]:
    """(holding, judged, missing) over ``(entry, verdict)`` pairs (:func:`parts`)."""
    verdicts = [v for _, v in items if v is not None]
    return sum(v["holds"] for v in verdicts), len(verdicts), sum(1 for _, v in items if v is None)


def tally(entries: list[Entry]) -> str:
    """``**3 of 5 verdicts hold**`` at the profile and seeds they share, and how many
    chapters recorded none."""
    items = [item for _, found in parts(entries) for item in found]
    held, judged, missing = counts(items)
    verdicts = [v for _, v in items if v is not None]
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


def missing_card(entry: Entry) -> list[str]:
    chapter = chapter_link(entry, text="Chapter") if entry.executed else chapter_link(entry)
    # no verdict file to link to (a link to it would fail the build)
    return card([f"{badge(None)} **{entry.name}**",
                 "The notebook failed or was not executed: no verdict was recorded. See the build log"
                 + (" and the chapter." if entry.executed else "."), "", chapter], CARD_CLASSES[None])


def mark(verdict: dict) -> str:
    return "✓" if verdict["holds"] else "✗"


def long_line(verdict: dict, long: dict | None, chapters: set) -> list[str]:
    """The verdict at the longest recorded schedule of the newest long record, beside
    this build's; nothing when the record does not hold the claim."""
    lv = (long or {}).get("verdicts", {}).get(verdict["claim"])
    if lv is None:
        return []
    where = f"×{lv['schedule']}, record `{long['record']}`" + (f" of {long['date']}" if long.get("date") else "")
    chapter = long.get("chapter")
    link = f"; {{doc}}`{chapter}`" if chapter and chapter in chapters else ""
    return [f"- *Longest recorded schedule* ({where}{link}): {mark(lv)} **{verdict_words(lv)}**"]


def rule_change_lines(verdict: dict, entry: Entry, changes) -> list[str]:
    """For a verdict whose rule replaced an earlier one: the change, and the earlier
    rule's verdict on the same runs (recorded by the same chapter as superseded)."""
    lines = []
    for change in changes:
        if verdict["claim"] not in change.new:
            continue
        old = next((v for v in entry.verdicts or [] if v["claim"] == change.old), None)
        then = (f"{mark(old)} **{outcome_text(old)}** ({sum(c['holds'] for c in old['conditions'])} of "
                f"{len(old['conditions'])} conditions)" if old else "not recorded in this build")
        lines += [f"*Rule changed on {change.date}:* this rule replaced **{change.old}** (the {{doc}}`rule_log` "
                  f"says why). Under the earlier rule, on the same runs: {then}.", ""]
    return lines


def verdict_card(entry: Entry, v: dict, changes=(), long: dict | None = None, chapters: set = frozenset()) -> list[str]:
    chapter = chapter_link(entry, text="Chapter") if entry.executed else chapter_link(entry)
    failing = [c for c in v["conditions"] if not c["holds"]]
    held = len(v["conditions"]) - len(failing)
    body = [f"**{v['headline']}**" if v.get("headline") else "", "",
            f"- *This build* (profile `{v['profile']}`, {seeds_text(v['seeds'])}): {mark(v)} "
            f"**{verdict_words(v)}**; {held} of {len(v['conditions'])} conditions hold",
            *long_line(v, long, chapters), ""]
    if v.get("fragile") and v.get("fragility"):
        body += [f"*{v['fragility']}*", ""]
    if v.get("more_seeds"):
        body += [f"*More seeds.* {v['more_seeds']}", ""]
    body += rule_change_lines(v, entry, changes)
    if v.get("statement"):
        body += [f"*The claim.* {v['statement']}", ""]
    body += [f"*The rule.* {v['rule']}", ""]
    if failing:
        body += ["*Fails:*", ""] + [f"- ✗ {c['name']}: {c['detail']}" for c in failing] + [""]
    return card([f"{badge(v)} **{v['claim']}** · {v['title']}", *body, f"{chapter} · {json_link(entry)}"],
                CARD_CLASSES[outcome(v)])


def page(entries: list[Entry], date: str, changes=(), long: dict | None = None) -> str:
    """The scorecard: a card per verdict, under the two :data:`PARTS`. ``changes``: the
    rule changes (``claims.RULE_CHANGES``); ``long``: the newest long-schedule record's
    verdicts at their longest schedule (``{"record", "date", "chapter", "verdicts":
    {claim: verdict dict with "schedule"}}``), or nothing."""
    chapters = {e.name for e in entries if e.executed}
    intro = (f"{tally(entries)}. Generated from the verdicts the chapters recorded when the book was built "
             f"({date}); nothing here is typed by hand. Each rule was fixed before its runs and is checked in "
             "every seed; a changed rule is on the {doc}`rule_log`, with its old verdict. Each verdict belongs to "
             "the schedule it was judged at: the card says how many training steps and how many of its runs had "
             "converged")
    if long:
        chapter = long.get("chapter")
        intro += (f", and, where the long-schedule record `{long['record']}` holds the claim, its verdict at the "
                  "longest schedule recorded" + (f" ({{doc}}`{chapter}` has every schedule)"
                                                 if chapter and chapter in chapters else ""))
    lines = ["# Scorecard", "", intro + ".", ""]
    for caption, items in parts(entries):
        held, judged, missing = counts(items)
        lines += [f"## {caption}", "", f"{held} of {judged} hold in this part"
                  + (f"; {missing} chapter{'s' if missing != 1 else ''} recorded none." if missing else "."), ""]
        for e, v in items:
            lines += missing_card(e) if v is None else verdict_card(e, v, changes, long, chapters)
    quiet = without_verdicts(entries)
    if quiet:
        lines += ["## Chapters without verdicts of their own", "",
                  "These render what other chapters or records computed and judge nothing themselves: "
                  + ", ".join(chapter_link(e) for e in quiet) + ".", ""]
    return "\n".join(lines)


def summary(entries: list[Entry]) -> str:
    """The introduction's results (included by ``book/intro.md``, so links are relative
    to ``book/``): one line per verdict, badge first, under the two :data:`PARTS`, then
    the lead figure."""
    lines = [f"{tally(entries)}; the {{doc}}`claims/scorecard` has the rules and every number.", ""]
    for caption, items in parts(entries):
        held, judged, _ = counts(items)
        lines += [f"**{caption}** ({held} of {judged} hold)", ""]
        for e, v in items:
            if v is None:
                lines.append(f"- {badge(None)} **{e.name}**: no verdict recorded ({chapter_link(e, 'claims/')}).")
            else:
                lines.append(f"- {badge(v)} **{v['claim']} · {v['title']}.** {v.get('headline') or ''} "
                             f"({chapter_link(e, 'claims/', 'chapter')}, {json_link(e, 'claims/')})")
        lines.append("")
    lead = [e for e in entries if e.name == LEAD_CHAPTER and e.verdicts is not None]
    if lead:
        lines += ["```{figure} " + f"claims/{lead_figure(LEAD_CHAPTER)}", ":width: 100%",
                  f":alt: {LEAD_CAPTION}", "", LEAD_CAPTION, "```", ""]
    return "\n".join(lines)


def rule_log(entries: list[Entry], changes: list) -> str:
    """Every change of a rule: date, old rule, new rule(s), why, and the verdict under
    each on the same runs (the old rule is computed on every build, never dropped)."""
    by_claim = {v["claim"]: (v, e) for e in entries for v in e.verdicts or []}
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
