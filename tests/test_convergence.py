"""The convergence rule (vqstudy.convergence, the Protocol page) on hand-made curves: a run
at rest, one whose MSE, usage or perplexity still moves, one exactly at a threshold, and
runs the curves cannot judge."""

import math

import pytest

from vqstudy import convergence
from vqstudy.chapter import RunSet


def curves(mse, usage=None, perplexity=None, total=1000, quantize_from=0):
    """Curve points every 10% of ``total``; the values up to 80% and at 100% are the given
    (start, end) pairs, every other point sits between them."""
    steps = [round(total * (i + 1) / 10) for i in range(10)]
    usage, perplexity = usage or (0.5, 0.5), perplexity or (100.0, 100.0)

    def values(pair):
        return [pair[0]] * 8 + [(pair[0] + pair[1]) / 2, pair[1]]

    phase = ["autoencoder" if s <= quantize_from else "vq" for s in steps]
    nan = float("nan")
    return {"step": steps, "phase": phase,
            "mse": [m if p == "vq" else m for m, p in zip(values(mse), phase)],
            "usage": [u if p == "vq" else nan for u, p in zip(values(usage), phase)],
            "perplexity": [x if p == "vq" else nan for x, p in zip(values(perplexity), phase)],
            "loss": [0.0] * 10, "dead_tokens": [0] * 10}


def test_a_run_at_rest_has_converged():
    found = convergence.run_convergence(curves((0.100, 0.0995), (0.50, 0.505), (100.0, 101.0)), 1000)
    # no point at step 750: the last one before it, so the window is a little longer, never shorter
    assert found["converged"] is True and found["from_step"] == 700 and found["to_step"] == 1000
    assert found["mse_change"] == pytest.approx(-0.005) and found["usage_change"] == pytest.approx(0.01)


@pytest.mark.parametrize("mse, usage, perplexity, moving", [
    ((0.100, 0.0985), (0.5, 0.5), (100.0, 100.0), "mse -1.5%"),      # still improving
    ((0.100, 0.1015), (0.5, 0.5), (100.0, 100.0), "mse +1.5%"),      # getting worse is movement too
    ((0.100, 0.100), (0.50, 0.515), (100.0, 100.0), "usage +3.0%"),
    ((0.100, 0.100), (0.5, 0.5), (100.0, 97.0), "perplexity -3.0%"),
])
def test_a_run_whose_metrics_still_move_has_not_converged(mse, usage, perplexity, moving):
    found = convergence.run_convergence(curves(mse, usage, perplexity), 1000)
    assert found["converged"] is False and moving in found["why"]


def test_a_change_exactly_at_a_threshold_is_not_convergence():
    # the rule says "less than": 1% of MSE and 2% of usage are not less than themselves
    assert not convergence.converged(curves((1.0, 0.99)), 1000)
    assert not convergence.converged(curves((0.1, 0.1), (0.5, 0.51)), 1000)
    assert convergence.converged(curves((1.0, 0.9901), (0.5, 0.5099)), 1000)


def test_runs_the_curves_cannot_judge_count_as_not_converged():
    late = curves((0.1, 0.1), quantize_from=900)          # quantization starts after 75% of the steps
    assert convergence.run_convergence(late, 1000)["converged"] is None
    assert convergence.converged(late, 1000) is False
    empty = {"step": [], "phase": [], "mse": [], "usage": [], "perplexity": []}
    assert convergence.run_convergence(empty, 1000) == {"converged": None, "why": "no training curves recorded"}


def test_the_rule_reads_the_vq_phase_of_a_pretrain_run():
    c = curves((0.1, 0.1), quantize_from=500)             # pretrain: autoencoder points have no usage
    assert all(math.isnan(u) for u, p in zip(c["usage"], c["phase"]) if p == "autoencoder")
    assert convergence.converged(c, 1000)


def test_a_run_table_counts_converged_runs_for_its_verdicts():
    from vqstudy import claims

    results = [{"metrics": {"mse": 0.1}, "autoencoder_mse_at_vq_init": 0.1, "seconds": 1.0,
                "config": {"total_steps": 1000}, "curves": c}
               for c in (curves((0.1, 0.1)), curves((0.1, 0.09)), curves((0.1, 0.0999)))]
    table = RunSet([{"seed": s} for s in range(3)], results).table
    assert table.converged.tolist() == [True, False, True] and table.total_steps.tolist() == [1000] * 3
    v = claims.Verdict("X", "t", "r", [claims.Condition("c", True, "")], {}).judged_on(table)
    assert (v.steps, v.runs, v.converged) == ([1000], 3, 2)
    assert v.schedule_text() == "at 1000 steps; 2 of 3 runs converged"


def test_runs_without_curves_say_convergence_was_not_measured():
    from vqstudy import claims

    results = [{"metrics": {"mse": 0.1}, "autoencoder_mse_at_vq_init": 0.1, "seconds": 1.0,
                "config": {"total_steps": 1000}, "curves": c}
               for c in ({"step": [], "phase": [], "mse": [], "usage": [], "perplexity": []}, curves((0.1, 0.1)))]
    table = RunSet([{"seed": 0}, {"seed": 1}], results).table
    assert table.converged.tolist() == [None, True]
    v = claims.Verdict("X", "t", "r", [claims.Condition("c", True, "")], {}).judged_on(table)
    assert (v.runs, v.converged, v.unmeasured) == (2, 1, 1)
    assert v.schedule_text() == "at 1000 steps; 1 of 2 runs converged (1 without curves to tell)"
    none = claims.Verdict("X", "t", "r", [], {}).judged_on(table.iloc[:1])
    assert none.schedule_text() == "at 1000 steps; convergence not measured (no training curves recorded)"
    assert none.to_dict()["schedule_text"] == none.schedule_text()
