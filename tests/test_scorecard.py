"""The pages made from the verdicts (scorecard, the introduction's summary, the rule log)
are pure functions of the recorded verdicts, in the parts and order of _toc.yml, and say
so when a chapter recorded none; the runner writes them from the verdict files."""

import datetime
import re

import nbformat

from vqstudy import claims, runner, scorecard

DATE = "2026-11-30 12:00 UTC"


def verdict(claim="C1", holds=True, role="claim", profile="smoke", notebook="alpha", **extra) -> dict:
    v = claims.Verdict(
        claim, f"Title of {claim}", f"rule of {claim}: x is lower than y in every seed",
        [claims.Condition("x < y", holds, "seed 0: 1 vs 2"), claims.Condition("z grows", True, "1 -> 3")],
        {"k_max": 64}, statement=f"statement of {claim}", headline=f"headline of {claim}: 17.3×",
        seeds=[0, 1], role=role, profile=profile, notebook=notebook)
    return {**v.to_dict(), **extra}


def entries(alpha=None, beta=None, gamma=None, beta_executed=False, delta=None):
    """Chapters in book order, with the _toc.yml part each is in."""
    found = [scorecard.Entry("alpha", alpha, True, "The paper's claims"),
             scorecard.Entry("beta", beta, beta_executed, "The paper's claims"),
             scorecard.Entry("gamma", gamma, True, "Beyond the paper")]
    return found + ([scorecard.Entry("delta", delta, True, "The paper's claims")] if delta is not None else [])


def block(page: str, start: str, *ends: str) -> str:
    """The text of ``page`` from ``start`` to the first of ``ends`` after it (or the end):
    one verdict's card, row or line, whatever the layout."""
    i = page.index(start)
    stops = [page.index(e, i + len(start)) for e in ends if e in page[i + len(start):]]
    return page[i:min(stops, default=len(page))]


def card_of(page: str, claim: str) -> str:
    """One verdict's card on the scorecard, from its opening to its end."""
    i = page.index(f"**{claim}** ·")
    return page[page.rindex("`````{card}", 0, i):page.index("`````\n", i) + 6]


def links_to(text: str, target: str) -> bool:
    """Whether ``text`` has a {doc} link to ``target`` (with or without a link text)."""
    return bool(re.search(r"\{doc\}`(?:[^`<]*<)?" + re.escape(target) + r">?`", text))


def tally(text: str) -> tuple[int, int, int]:
    held, judged = map(int, re.search(r"\*\*(\d+) of (\d+) verdicts? hold\*\*", text).groups())
    missing = re.search(r"(\d+) chapters? recorded none", text)
    return held, judged, int(missing[1]) if missing else 0


PAPER, OWN = "## The paper's claims", "## The study's own readings and findings"
MARKERS = ("**C1**", "**C3a**", "**beta**", "**F1**", "**C2h**", "**alpha**", "## ")


def test_scorecard_shows_each_verdict_in_book_order_under_its_part():
    page = scorecard.page(entries(alpha=[verdict("C1", holds=False), verdict("C1-v1", role="superseded")],
                                  gamma=[verdict("F1", role="finding", notebook="gamma")]), DATE)
    assert page.startswith("# Scorecard\n")
    assert tally(page) == (1, 2, 1) and DATE in page
    assert page.index(PAPER) < page.index("**C1**") < page.index("**beta**") < page.index(OWN) \
        < page.index("**F1**")
    assert "C1-v1" not in page  # a superseded rule is on the rule log, not here
    c1 = card_of(page, "C1")
    for text in ("Title of C1", "alpha.verdict.json", "statement of C1", "rule of C1", "{bdg-danger}`does not hold`",
                 "1 of 2 conditions", "headline of C1: 17.3×", "x < y: seed 0: 1 vs 2", "`smoke`", "0, 1"):
        assert text in c1, text
    assert links_to(c1, "alpha")
    assert "z grows" not in c1  # only failing conditions are spelled out
    f1 = card_of(page, "F1")
    assert "2 of 2 conditions" in f1 and "x < y" not in f1 and "{bdg-success}`holds`" in f1


def test_the_parts_are_the_papers_claims_and_the_studys_own_readings_whatever_the_toc_says():
    """C1, C2 and C3a are the paper's; C2h and C3b (the study's readings of them) and every
    finding are the study's own, even when their chapter sits in another part of the book."""
    page = scorecard.page(entries(alpha=[verdict("C2"), verdict("C2h"), verdict("C2-v1", role="superseded")],
                                  gamma=[verdict("C3a", notebook="gamma"), verdict("C3b", notebook="gamma"),
                                         verdict("R3", role="finding", notebook="gamma")]), DATE)
    paper, own = page[page.index(PAPER):page.index(OWN)], page[page.index(OWN):]
    assert "**C2** ·" in paper and "**C3a** ·" in paper and "**beta**" in paper  # beta: no verdict, in the paper's part
    for claim in ("C2h", "C3b", "R3"):
        assert f"**{claim}** ·" in own and f"**{claim}** ·" not in paper, claim
    assert "## Beyond the paper" not in page
    assert page.index("**C2** ·") < page.index("**C3a** ·") and page.index("**C2h** ·") < page.index("**C3b** ·")
    assert "2 of 2 hold in this part; 1 chapter recorded none." in paper and "3 of 3 hold in this part." in own
    text = scorecard.summary(entries(alpha=[verdict("C2"), verdict("C2h")], gamma=[verdict("F1", role="finding")]))
    assert text.index("**The paper's claims** (1 of 1 hold)") < text.index("**C2 ·") \
        < text.index("**The study's own readings and findings** (2 of 2 hold)") < text.index("**C2h ·") \
        < text.index("**F1 ·")


def test_each_badge_has_the_schedule_and_how_many_runs_converged_beside_it():
    page = scorecard.page(entries(alpha=[verdict("C1", steps=[1000], runs=30, converged=4),
                                         verdict("C2", holds=False, steps=[1000, 4000], runs=12, converged=12)],
                                  gamma=[verdict("F1", role="finding")]), DATE)
    assert "holds at 1000 steps; 4 of 30 runs converged" in card_of(page, "C1")
    assert "does not hold at 1000–4000 steps; 12 of 12 runs converged" in card_of(page, "C2")
    f1 = card_of(page, "F1")  # a verdict that does not say its schedule: nothing is made up
    assert "steps" not in f1 and "converged" not in f1
    assert scorecard.schedule_text({"steps": [], "runs": 0}) == "" and \
        scorecard.verdict_words({"holds": True, "steps": [2000], "runs": 12, "converged": 6}) == \
        "holds at 2000 steps; 6 of 12 runs converged"


def test_a_fragile_verdict_says_so_on_its_badge_and_its_card_names_the_condition_and_margin():
    fragile = verdict("C1", fragile=True, fragility="Fragile: x < y, margin 0.01 (0.2 seed spreads).")
    failing = verdict("C2", holds=False, fragile=True, fragility="Fragile: x < y, margin −0.003.")
    page = scorecard.page(entries(alpha=[fragile, failing, verdict("C3a")]), DATE)
    c1, c2, c3a = card_of(page, "C1"), card_of(page, "C2"), card_of(page, "C3a")
    assert "{bdg-success}`holds, fragile`" in c1 and "Fragile: x < y, margin 0.01 (0.2 seed spreads)." in c1
    assert "{bdg-danger}`does not hold, fragile`" in c2 and "margin −0.003" in c2
    assert "fragile" not in c3a.lower() and "{bdg-success}`holds`" in c3a
    summary = scorecard.summary(entries(alpha=[fragile]))
    assert "{bdg-success}`holds, fragile`" in summary
    assert scorecard.badge(None) == "{bdg-secondary}`no verdict`"


def test_a_card_says_how_more_seeds_moved_a_fragile_verdict_and_only_then():
    moved = verdict("C1", more_seeds="C1 holds at 3 seeds, fragile (x, margin 0.01); with seeds 0, 1, 2, 3, 4: "
                                     "holds, no longer fragile.")
    page = scorecard.page(entries(alpha=[moved, verdict("C3a")]), DATE)
    assert "*More seeds.* C1 holds at 3 seeds, fragile" in card_of(page, "C1")
    assert "More seeds" not in card_of(page, "C3a")


def test_a_card_shows_the_verdict_at_the_longest_recorded_schedule_beside_this_builds():
    long = {"record": "long-cpu-2026-12-07", "date": "2026-12-07", "chapter": "delta",
            "verdicts": {"C1": verdict("C1", holds=False, steps=[32000], runs=12, converged=11, schedule=16)}}
    page = scorecard.page(entries(alpha=[verdict("C1", steps=[2000], runs=12, converged=6), verdict("C2")],
                                  delta=[]), DATE, long=long)
    c1 = card_of(page, "C1")
    this_build, longest = c1.index("holds at 2000 steps; 6 of 12 runs converged"), c1.index("does not hold at 32000")
    assert this_build < longest  # side by side, this build's first
    assert "×16" in c1 and "long-cpu-2026-12-07" in c1 and "2026-12-07" in c1 and "11 of 12 runs converged" in c1
    assert links_to(c1, "delta")
    assert "long-cpu" not in card_of(page, "C2")  # the record does not hold C2
    assert "long-cpu" not in scorecard.page(entries(alpha=[verdict("C1")]), DATE)  # no record, nothing said
    # the chapter that renders the record judges nothing itself: named, not carded, not counted
    assert tally(page) == (2, 2, 2) and "## Chapters without verdicts of their own" in page
    assert links_to(page[page.index("## Chapters without"):], "delta")


def test_a_verdict_whose_rule_replaced_an_earlier_one_shows_that_rules_verdict_beside_it():
    changes = [claims.RuleChange("2026-11-30", "C3-v1", ["C3a", "C3b"], "joined two claims"),
               claims.RuleChange("2026-11-30", "C2-v1", ["C2"], "end points")]
    page = scorecard.page(entries(alpha=[verdict("C1"), verdict("C2", holds=False), verdict("C2h")],
                                  gamma=[verdict("C3a", notebook="gamma"), verdict("C3b", holds=False),
                                         verdict("C3-v1", holds=False, role="superseded")]), DATE, changes)
    c3a, c3b, c2 = card_of(page, "C3a"), card_of(page, "C3b"), card_of(page, "C2")
    for text in (c3a, c3b):
        assert "Rule changed on 2026-11-30" in text and "replaced **C3-v1**" in text
        assert "✗ **does not hold** (1 of 2 conditions)" in text and links_to(text, "rule_log")
    assert "replaced **C2-v1**" in c2 and "not recorded in this build" in c2  # alpha recorded no C2-v1
    assert "Rule changed" not in card_of(page, "C1") and "Rule changed" not in card_of(page, "C2h")
    assert "C3-v1 ·" not in page  # the superseded verdict has no card of its own


def test_a_chapter_without_verdicts_says_so():
    page = scorecard.page(entries(alpha=None, beta=None, beta_executed=True), DATE)
    assert tally(page) == (0, 0, 3)
    for name in ("alpha", "beta", "gamma"):
        assert f"**{name}**" in page
    assert page.count("{bdg-secondary}`no verdict`") == 3
    assert links_to(page, "beta") and "see the build log" in page.lower()
    assert ".verdict.json" not in page  # no link to a file that is not there (it would fail the build)
    assert page.index("**alpha**") < page.index(OWN) < page.index("**gamma**")  # by the part the book lists it in
    never = scorecard.page(entries(), DATE)
    assert "`notebooks/beta.ipynb` (not executed)" in never and not links_to(never, "beta")


def test_summary_lists_every_shown_verdict_with_a_link_from_the_introduction():
    text = scorecard.summary(entries(alpha=[verdict("C1"), verdict("C1-v1", role="superseded")],
                                     gamma=[verdict("F1", holds=False, notebook="gamma")]))
    assert tally(text) == (1, 2, 1) and links_to(text, "claims/scorecard") and "C1-v1" not in text
    assert text.index("**C1") < text.index("**beta**") < text.index("**F1")
    c1, beta, f1 = text[text.index("**C1"):text.index("**beta**")], \
        text[text.index("**beta**"):text.index("**F1")], text[text.index("**F1"):]
    assert links_to(c1, "claims/alpha") and "{bdg-success}`holds`" in text[:text.index("**beta**")] \
        and "headline of C1" in c1
    assert "{bdg-secondary}`no verdict`" in text[text.index("**C1"):text.index("**F1")]
    assert links_to(f1, "claims/gamma") and "{bdg-danger}`does not hold`" in text[text.index("**beta**"):]
    assert not links_to(beta, "claims/beta")  # never executed: nothing to link to


def test_rule_log_shows_the_old_and_the_new_rule_with_both_verdicts():
    changes = [claims.RuleChange("2026-11-30", "C9-v1", ["C9", "C9b"], "the first rule joined two claims")]
    log = scorecard.rule_log(entries(alpha=[verdict("C9", holds=False), verdict("C9-v1", role="superseded")]),
                             changes)
    assert log.startswith("# Rule log")
    assert "2026-11-30: C9-v1 → C9, C9b" in log and "the first rule joined two claims" in log
    old, new, missing = log.index("(C9-v1"), log.index("(C9,"), log.index("(C9b)")
    assert old < new < missing
    assert "rule of C9-v1" in log[old:new] and "{bdg-success}`holds`" in log[old:new]
    assert "{bdg-danger}`does not hold`" in log[new:missing] and "x < y" in log[new:missing]
    assert "{bdg-secondary}`no verdict`" in log[missing:] and "not recorded" in log[missing:]


def test_the_real_rule_changes_are_on_the_rule_log():
    log = scorecard.rule_log([], claims.RULE_CHANGES)
    for change in claims.RULE_CHANGES:
        assert f"{change.old} → {', '.join(change.new)}" in log


TOC = """format: jb-book
root: book/intro
parts:
  - caption: The paper's claims
    chapters:
      - file: book/claims/scorecard
      - file: book/claims/alpha
      - file: book/claims/beta
  - caption: Appendix
    chapters:
      - file: book/reproduce
      - file: book/claims/rule_log
"""


def test_toc_parts_and_the_executed_chapters(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOC)
    assert runner.toc_parts(tmp_path) == [
        ("The paper's claims", ["book/claims/scorecard", "book/claims/alpha", "book/claims/beta"]),
        ("Appendix", ["book/reproduce", "book/claims/rule_log"])]
    assert runner.executed_notebooks(tmp_path) == ["alpha", "beta"]  # scorecard and rule_log are generated
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/claims/alpha\n"
                                       "  - file: book/other\n    sections:\n      - file: book/claims/beta\n")
    assert runner.toc_parts(tmp_path) == [("", ["book/claims/alpha", "book/other", "book/claims/beta"])]


def test_the_runner_writes_the_pages_from_the_verdict_files(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOC)
    folder = tmp_path / runner.EXECUTED_DIR
    folder.mkdir(parents=True)
    v = claims.Verdict("C9", "Alpha", "rule", [claims.Condition("x < y", False, "1 vs 2")], {}, seeds=[0],
                       profile="smoke", notebook="alpha")
    claims.record([v], folder, "alpha")
    nbformat.write(nbformat.v4.new_notebook(), folder / "alpha.ipynb")
    page = runner.write_pages(tmp_path)
    assert page == folder / "scorecard.md"
    text = page.read_text()
    assert tally(text) == (0, 1, 1)
    assert text.index("**beta**") < text.index("**C9**")  # beta is listed under the paper's part, C9 is not a paper claim
    assert "## The paper's claims" in text and "## The study's own readings and findings" in text
    assert "## Appendix" not in text and "Longest recorded schedule" not in text  # no record under tmp_path
    assert datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d") in text
    assert links_to((folder / runner.SUMMARY).read_text(), "claims/alpha")
    assert (folder / "rule_log.md").read_text().startswith("# Rule log")
