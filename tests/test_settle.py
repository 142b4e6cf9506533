"""Chapter.settle: a fragile verdict gets more seeds where the budget allows, and the note
says how it moved; otherwise the note says how many seeds would settle it."""

import pytest

from vqstudy import claims, rules
from vqstudy.chapter import Chapter
from vqstudy.params import REPO_ROOT


def fragile_verdict(seeds) -> claims.Verdict:
    c = rules.Condition("c", True, "", margin=0.01, spread=0.1, values={s: 0.5 for s in seeds},
                        flips_without_seed=[seeds[0]])
    return claims.Verdict("T", "t", "r", [c], {}, seeds=list(seeds))


def chapter(seed: list) -> Chapter:
    namespace = {"__name__": "__main__"}
    ch = Chapter(namespace)
    namespace.update(PAPERMILL_INPUT_PATH=str(REPO_ROOT / "notebooks" / "template.ipynb"), profile="smoke", seed=seed)
    ch.parameters()
    return ch


def test_a_verdict_that_is_not_fragile_is_left_as_it_is():
    v = claims.Verdict("T", "t", "r", [rules.Condition("c", True, "")], {}, seeds=[0])
    ch = chapter([0])
    assert ch.settle([v], lambda runs: [], budget_seconds=1e9) == ([v], "No verdict here is fragile, so no more seeds were run.")
    assert v.more_seeds == ""


@pytest.mark.slow
def test_a_fragile_verdict_gets_more_seeds_within_the_budget_and_the_note_says_how_it_moved():
    ch = chapter([0, 1])
    runs = ch.runs()
    judged = []

    def judge(more):
        judged.append(sorted(more.table.seed.unique().tolist()))
        return [claims.Verdict("T", "t", "r", [rules.Condition("c", True, "")], {}, seeds=judged[-1])]

    verdicts, note = ch.settle([fragile_verdict([0, 1])], judge, budget_seconds=1e9, most_seeds=4)
    assert judged == [[0, 1, 2, 3]] and verdicts[0].seeds == [0, 1, 2, 3]
    assert verdicts[0].more_seeds.startswith("T holds at 2 seeds, fragile") and "no longer fragile" in verdicts[0].more_seeds
    assert ch.sweep.params["seed"] == [0, 1, 2, 3]  # what publish and provenance then report
    assert "T holds at 2 seeds, fragile" in note and "With seeds 0, 1, 2, 3" in note and "no longer fragile" in note
    assert len(ch.results) == 2 * len(runs.results)


@pytest.mark.slow
def test_over_the_budget_the_note_says_how_many_seeds_would_settle_it():
    ch = chapter([0, 1])
    ch.runs()
    verdicts, note = ch.settle([fragile_verdict([0, 1])], lambda runs: pytest.fail("trained"), budget_seconds=0)
    assert "more than the 0 s this chapter allows" in note
    assert "more than the 0 s" in verdicts[0].more_seeds and "*More seeds.*" in verdicts[0].checklist()
    assert "about 100 seeds would make the seed spread's standard error smaller than the margin" in note


def test_a_fragile_verdict_published_without_settle_says_how_many_seeds_would_settle_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ch, v, steady = chapter([0]), fragile_verdict([0, 1]), claims.Verdict("S", "s", "r", [rules.Condition("c", True, "")], {})
    ch.publish(v, steady)
    assert v.more_seeds == "No more seeds run in this chapter. T: about 100 seeds would make the seed spread's " \
                           "standard error smaller than the margin."
    assert steady.more_seeds == "" and claims.read(tmp_path, "template")[0]["more_seeds"] == v.more_seeds
