"""The scorecard is generated from the recorded verdicts, in toc order, and says so when
a verdict is missing; the runner never executes it as a notebook."""

import json

import nbformat

from vqstudy import claims, runner, scorecard

TOC = """format: jb-book
root: book/intro
chapters:
  - file: book/claims/scorecard
  - file: book/claims/alpha
  - file: book/claims/beta
  - file: book/reproduce
"""


def make_root(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "book" / "claims").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# Beta\n\n**The paper's claim.** Beta is\nbetter than gamma.\n\n**What this chapter does.** Things.")])
    nbformat.write(nb, tmp_path / "notebooks" / "beta.ipynb")
    return tmp_path


def alpha_verdict(holds=True):
    return claims.Verdict(
        "C9", "Alpha", "x is lower than y in every seed",
        [claims.Condition("x < y", holds, "seed 0: 1 vs 2"), claims.Condition("z grows", True, "1 -> 3")],
        {"k_max": 64, "mse_baseline": 0.91234, "mse_pretrain": 0.8, "ratio": 17.28},
        profile="smoke", seeds=[0, 1], notebook="alpha", statement="Alpha beats its baseline.")


def test_the_runner_executes_chapters_but_not_the_scorecard(tmp_path):
    root = make_root(tmp_path)
    assert runner.executed_notebooks(root) == ["alpha", "beta"]
    assert "scorecard" in runner.GENERATED_PAGES


def test_rows_come_from_the_verdicts_in_toc_order_and_a_missing_one_is_reported(tmp_path):
    root = make_root(tmp_path)
    claims.record(alpha_verdict(holds=False), root / "book" / "claims")
    (root / "book" / "claims" / "alpha.ipynb").write_text("{}")
    page = scorecard.write(root).read_text()
    assert page.startswith("# Scorecard")
    assert "**0 of 2 hold**" in page
    alpha, beta = page.index("**C9**"), page.index("**beta**")
    assert alpha < beta
    row = page[alpha:beta]
    for text in ("{doc}`alpha`", "Alpha beats its baseline.", "*Rule:* x is lower than y in every seed",
                 "**does not hold** (1 of 2 conditions)", "*Fails:* x < y", "mse: baseline 0.912, pretrain 0.8",
                 "k max = 64", "ratio = 17.3", "`smoke`", "seeds 0, 1"):
        assert text in row, text
    missing = page[beta:]
    assert "**no verdict**" in missing and "not executed" in missing
    assert "Beta is better than gamma." in missing  # the claim, from the notebook's own words


def test_a_holding_claim_is_counted(tmp_path):
    root = make_root(tmp_path)
    claims.record(alpha_verdict(holds=True), root / "book" / "claims")
    page = scorecard.write(root).read_text()
    assert "**1 of 2 hold**" in page and "**holds** (2 of 2 conditions)" in page


def test_verdict_json_round_trip_keeps_the_statement(tmp_path):
    path = claims.record(alpha_verdict(), tmp_path)
    assert json.loads(path.read_text())["statement"] == "Alpha beats its baseline."


def test_key_numbers_pairs_regimes():
    assert scorecard.key_numbers({"perplexity_baseline": 42.69, "perplexity_pretrain": 738.0, "k_max": 1024}) == [
        "perplexity: baseline 42.7, pretrain 738", "k max = 1024"]
