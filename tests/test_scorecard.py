"""The pages made from the verdicts (scorecard, the introduction's summary, the rule log)
are pure functions of the recorded verdicts, in the parts and order of _toc.yml, and say
so when a chapter recorded none; the runner writes them from the verdict files."""

import datetime
import re

import nbformat

from vqstudy import claims, runner, scorecard

DATE = "2026-11-30 12:00 UTC"


def verdict(claim="C9", holds=True, role="claim", profile="smoke", notebook="alpha") -> dict:
    v = claims.Verdict(
        claim, f"Title of {claim}", f"rule of {claim}: x is lower than y in every seed",
        [claims.Condition("x < y", holds, "seed 0: 1 vs 2"), claims.Condition("z grows", True, "1 -> 3")],
        {"k_max": 64}, statement=f"statement of {claim}", headline=f"headline of {claim}: 17.3×",
        seeds=[0, 1], role=role, profile=profile, notebook=notebook)
    return v.to_dict()


def sections(alpha=None, beta=None, gamma=None, beta_executed=False):
    return [("The paper's claims", [scorecard.Entry("alpha", alpha, True), scorecard.Entry("beta", beta, beta_executed)]),
            ("Beyond the paper", [scorecard.Entry("gamma", gamma, True)])]


def block(page: str, start: str, *ends: str) -> str:
    """The text of ``page`` from ``start`` to the first of ``ends`` after it (or the end):
    one verdict's card, row or line, whatever the layout."""
    i = page.index(start)
    stops = [page.index(e, i + len(start)) for e in ends if e in page[i + len(start):]]
    return page[i:min(stops, default=len(page))]


def links_to(text: str, target: str) -> bool:
    """Whether ``text`` has a {doc} link to ``target`` (with or without a link text)."""
    return bool(re.search(r"\{doc\}`(?:[^`<]*<)?" + re.escape(target) + r">?`", text))


def tally(text: str) -> tuple[int, int, int]:
    held, judged = map(int, re.search(r"\*\*(\d+) of (\d+) verdicts? hold\*\*", text).groups())
    missing = re.search(r"(\d+) chapters? recorded none", text)
    return held, judged, int(missing[1]) if missing else 0


MARKERS = ("**C9**", "**C9-v1**", "**beta**", "**F1**", "**alpha**", "## ")


def test_scorecard_shows_each_verdict_in_toc_order_under_its_part():
    page = scorecard.page(sections(alpha=[verdict("C9", holds=False), verdict("C9-v1", role="superseded")],
                                   gamma=[verdict("F1", role="finding", notebook="gamma")]), DATE)
    assert page.startswith("# Scorecard\n")
    assert tally(page) == (1, 2, 1) and DATE in page
    assert page.index("## The paper's claims") < page.index("**C9**") < page.index("**beta**") \
        < page.index("## Beyond the paper") < page.index("**F1**")
    assert "C9-v1" not in page  # a superseded rule is on the rule log, not here
    c9 = block(page, "**C9**", *MARKERS)
    for text in ("Title of C9", "alpha.verdict.json", "statement of C9", "rule of C9", "{bdg-danger}`does not hold`",
                 "1 of 2 conditions", "headline of C9: 17.3×", "x < y: seed 0: 1 vs 2", "`smoke`", "0, 1"):
        assert text in page[page.rindex("\n\n", 0, page.index("**C9**")):page.index("**beta**")], text
    assert links_to(page[:page.index("**beta**")], "alpha")
    assert "z grows" not in c9  # only failing conditions are spelled out
    f1 = block(page, "**F1**", *MARKERS)
    assert "2 of 2 conditions" in f1 and "x < y" not in f1
    assert "{bdg-success}`holds`" in page[page.index("## Beyond the paper"):]


def test_a_chapter_without_verdicts_says_so():
    page = scorecard.page(sections(alpha=None, beta=None, beta_executed=True), DATE)
    assert tally(page) == (0, 0, 3)
    for name in ("alpha", "beta", "gamma"):
        assert f"**{name}**" in page
    assert page.count("{bdg-secondary}`no verdict`") == 3
    assert links_to(page, "beta") and "see the build log" in page.lower()
    assert ".verdict.json" not in page  # no link to a file that is not there (it would fail the build)
    never = scorecard.page(sections(), DATE)
    assert "`notebooks/beta.ipynb` (not executed)" in never and not links_to(never, "beta")


def test_summary_lists_every_shown_verdict_with_a_link_from_the_introduction():
    text = scorecard.summary(sections(alpha=[verdict("C9"), verdict("C9-v1", role="superseded")],
                                      gamma=[verdict("F1", holds=False, notebook="gamma")]))
    assert tally(text) == (1, 2, 1) and links_to(text, "claims/scorecard") and "C9-v1" not in text
    assert text.index("**C9") < text.index("**beta**") < text.index("**F1")
    c9, beta, f1 = text[text.index("**C9"):text.index("**beta**")], \
        text[text.index("**beta**"):text.index("**F1")], text[text.index("**F1"):]
    assert links_to(c9, "claims/alpha") and "{bdg-success}`holds`" in text[:text.index("**beta**")] \
        and "headline of C9" in c9
    assert "{bdg-secondary}`no verdict`" in text[text.index("**C9"):text.index("**F1")]
    assert links_to(f1, "claims/gamma") and "{bdg-danger}`does not hold`" in text[text.index("**beta**"):]
    assert not links_to(beta, "claims/beta")  # never executed: nothing to link to


def test_rule_log_shows_the_old_and_the_new_rule_with_both_verdicts():
    changes = [claims.RuleChange("2026-11-30", "C9-v1", ["C9", "C9b"], "the first rule joined two claims")]
    log = scorecard.rule_log(sections(alpha=[verdict("C9", holds=False), verdict("C9-v1", role="superseded")]),
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
    assert text.index("**C9**") < text.index("**beta**") and "## The paper's claims" in text
    assert "## Appendix" not in text  # a part without chapters gets no table
    assert datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d") in text
    assert links_to((folder / runner.SUMMARY).read_text(), "claims/alpha")
    assert (folder / "rule_log.md").read_text().startswith("# Rule log")
