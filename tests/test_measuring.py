"""Per-batch against whole-set measures of codebook use (vqstudy.measuring) on hand-made
token streams whose answers are known, and PQ1 (vqstudy.findings.check_batch_understates,
the Measuring collapse chapter) on hand-made run tables: each of its conditions holding,
failing and exactly at its threshold, as tests/test_findings.py does for the other
findings."""

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vqstudy import findings, measuring, metrics, rules


@pytest.fixture(autouse=True)
def no_floating_point_spread(monkeypatch):
    """No committed floating-point spread reaches these tables: the outcomes are the data's alone."""
    monkeypatch.setattr(rules, "fp_spread", lambda root=None: {})


def cycling(k: int, repeats: int) -> np.ndarray:
    """0, 1, ..., K-1, 0, 1, ...: every token used equally, each run of K ids all distinct."""
    return np.tile(np.arange(k), repeats)


# --- whole set -------------------------------------------------------------------------------

def test_uniform_use_of_all_k_tokens_has_whole_set_perplexity_k_and_full_usage():
    m = measuring.whole_set(cycling(1024, 5), 1024)
    assert m["perplexity"] == pytest.approx(1024) and m["usage"] == 1.0


def test_one_token_has_perplexity_one_and_usage_one_over_k():
    m = measuring.whole_set(np.full(500, 7), 64)
    assert m["perplexity"] == pytest.approx(1.0) and m["usage"] == 1 / 64


def test_the_whole_set_is_the_study_s_metric():
    ids = np.random.default_rng(0).zipf(1.5, 3000) % 256
    counts = torch.bincount(torch.from_numpy(ids), minlength=256)
    m = measuring.whole_set(torch.from_numpy(ids), 256)
    assert m["perplexity"] == metrics.perplexity(counts) and m["usage"] == metrics.usage(counts)


def test_ids_outside_the_codebook_are_refused():
    with pytest.raises(ValueError, match=r"token ids must be in 0\.\.15 \(num_tokens=16\), got ids from 0 to 16"):
        measuring.whole_set([0, 3, 16], 16)
    with pytest.raises(ValueError, match="got ids from -1"):
        measuring.per_batch([-1, 3], 16, 2)


# --- per batch -------------------------------------------------------------------------------

@pytest.mark.parametrize("b", [16, 64, 256])
def test_per_batch_perplexity_is_the_batch_size_when_a_batch_holds_distinct_tokens(b):
    """All K tokens used uniformly, each in-order batch of B << K ids all distinct: per-batch
    perplexity exactly B and usage B / K, against K and 100% over the whole set."""
    k = 1024
    m = measuring.per_batch(cycling(k, 4), k, b)
    assert m["perplexity"] == pytest.approx(b) and m["usage"] == pytest.approx(b / k)
    assert m["batches"] == 4 * k // b and m["batch_tokens"] == b and m["perplexity_sd"] == pytest.approx(0)


@pytest.mark.parametrize("b", [16, 32])
def test_shuffled_uniform_use_gives_about_b_per_batch(b):
    """Shuffled, a batch of B ids drawn from K = 1024 equally used tokens repeats a token only
    rarely (about B² / 2K pairs): per-batch perplexity just below B."""
    m = measuring.per_batch(cycling(1024, 8), 1024, b, shuffle_seed=0)
    assert 0.95 * b < m["perplexity"] <= b and m["usage"] <= b / 1024


def test_a_batch_as_large_as_the_set_is_the_whole_set_and_an_incomplete_batch_is_left_out():
    ids = np.random.default_rng(1).integers(0, 50, 1000)
    whole = measuring.whole_set(ids, 50)
    for b in (1000, 5000):
        m = measuring.per_batch(ids, 50, b)
        assert m["batches"] == 1 and m["batch_tokens"] == 1000
        assert m["perplexity"] == pytest.approx(whole["perplexity"]) and m["usage"] == whole["usage"]
    m = measuring.per_batch(np.r_[np.zeros(300, int), np.arange(50)], 50, 300)  # 350 ids: one batch of 300 zeros
    assert m["batches"] == 1 and m["perplexity"] == pytest.approx(1.0) and m["usage"] == 1 / 50


def test_in_order_and_shuffled_batches_differ_where_the_stream_is_ordered():
    """First half one token, second half 64 others in turn: in order, half the batches hold
    one token and half hold 16 distinct ones (mean perplexity 8.5); shuffled, every batch
    is about half token 0 and half eight others (perplexity about exp(ln 2 + ln 8 / 2) =
    5.7): the same ids, a different per-batch reading."""
    ids = np.r_[np.zeros(1024, int), 1 + cycling(64, 16)]
    in_order = measuring.per_batch(ids, 65, 16)
    assert in_order["perplexity"] == pytest.approx((1 + 16) / 2)
    assert in_order["usage"] == pytest.approx((1 + 16) / 2 / 65)
    shuffled = measuring.per_batch(ids, 65, 16, shuffle_seed=3)
    assert 5 < shuffled["perplexity"] < 6.5
    assert measuring.per_batch(ids, 65, 16, shuffle_seed=3) == shuffled  # the seed fixes the shuffle


def test_per_batch_counts_blocks_of_rows_the_same_as_at_once(monkeypatch):
    ids = np.random.default_rng(2).integers(0, 100, 4096)
    at_once = measuring.per_batch(ids, 100, 16)
    monkeypatch.setattr(measuring, "MAX_CELLS", 250)  # two rows of 100 tokens at a time
    assert measuring.per_batch(ids, 100, 16) == pytest.approx(at_once)


def test_batch_and_token_sizes_double_up_to_the_whole_set():
    assert measuring.batch_sizes(5000) == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 5000]
    assert measuring.batch_sizes(4096) == [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert measuring.batch_sizes(10) == [10]
    assert measuring.token_sizes(5000, 1024) == [128, 256, 512, 1024, 2048, 4096, 5000]
    assert measuring.token_sizes(3, 4) == [1, 2, 3]


def test_the_batch_curve_is_one_row_per_order_and_size():
    ids = cycling(256, 4)
    curve = measuring.batch_curve(ids, 256, shuffle_seed=0)
    sizes = measuring.batch_sizes(1024)
    assert list(curve.order) == [measuring.IN_ORDER] * len(sizes) + [measuring.SHUFFLED] * len(sizes)
    assert list(curve.batch_tokens) == sizes * 2
    in_order = curve[curve.order == measuring.IN_ORDER].set_index("batch_tokens")
    assert in_order.perplexity[16] == pytest.approx(16) and in_order.perplexity[1024] == pytest.approx(256)
    assert measuring.batch_curve(ids, 256).order.unique().tolist() == [measuring.IN_ORDER]


def test_whole_set_perplexity_and_usage_on_the_first_n_tokens():
    """Uniform use of K tokens in turn: the first N ≤ K ids have perplexity N and usage N / K."""
    k = 512
    curve = measuring.first_n_curve(cycling(k, 3), k).set_index("n_tokens")
    assert list(curve.index) == [64, 128, 256, 512, 1024, 1536]
    assert curve.perplexity[64] == pytest.approx(64) and curve.usage[64] == 64 / k
    assert curve.perplexity[512] == pytest.approx(k) and curve.usage[512] == 1.0
    assert curve.n_over_k[1536] == 3.0 and curve.perplexity[1536] == pytest.approx(k)


# --- from a stored run -------------------------------------------------------------------------

def test_assign_is_the_nearest_token():
    rng = np.random.default_rng(4)
    tokens, z = torch.from_numpy(rng.normal(size=(300, 5))).float(), torch.from_numpy(rng.normal(size=(2000, 5))).float()
    brute = torch.cdist(z.double(), tokens.double()).argmin(1)
    assert torch.equal(measuring.assign(z, tokens), brute)


def stored_run(ids: np.ndarray, k: int, dim: int = 3, batch_size: int = 16, kept: int | None = None,
               all_ids: np.ndarray | None = None) -> dict:
    """A run as vqstudy.training.train stores it: tokens on a well-spread grid, each kept
    embedding its token plus a little noise (so that its nearest token is its id), and the
    token counts of every evaluation embedding (``all_ids``, default ``ids``)."""
    rng = np.random.default_rng(5)
    tokens = torch.from_numpy(rng.permutation(k * 10)[:k, None] * np.ones((1, dim)) * 0.5).float()
    kept_ids = ids[:kept] if kept else ids
    embeddings = tokens[torch.from_numpy(kept_ids)] + 0.01 * torch.from_numpy(rng.normal(size=(len(kept_ids), dim))).float()
    counts = torch.bincount(torch.from_numpy(ids if all_ids is None else all_ids), minlength=k)
    return {"config": {"codebook_size": k, "batch_size": batch_size},
            "final": {"embeddings": embeddings, "tokens": tokens, "counts": counts}}


def test_measure_run_reads_every_measure_from_a_run_that_kept_every_embedding():
    k = 256
    result = measuring.measure_run(stored_run(cycling(k, 4), k, batch_size=2), positions=8, shuffle_seed=0)
    s = result["summary"]
    assert s["codebook_size"] == k and s["latent_dim"] == 3 and s["tokens_evaluated"] == s["tokens_kept"] == 4 * k
    assert s["batch_tokens"] == 16 and s["batch_over_k"] == 16 / k and s["batches"] == 4 * k // 16
    assert s["perplexity"] == pytest.approx(k) and s["usage"] == 1.0 and s["kept_perplexity"] == pytest.approx(k)
    assert s["batch_perplexity"] == pytest.approx(16) and s["batch_usage"] == pytest.approx(16 / k)
    assert s["batch_ratio"] == pytest.approx(16 / k) and s["mismatch"] == 0
    assert s["perplexity_at_k"] == pytest.approx(k) and s["usage_at_k"] == 1.0
    assert 0.9 * 16 < s["shuffled_batch_perplexity"] <= 16
    assert set(result["batches"].order) == {measuring.IN_ORDER, measuring.SHUFFLED}
    assert list(result["first_n"].source.unique()) == ["embeddings"]


def test_measure_run_on_the_first_part_adds_the_whole_set_from_the_counts():
    """Embeddings kept for the first 512 of 2048 ids; the counts cover all 2048, of which
    the last 1536 use one token only."""
    k = 256
    ids = np.r_[cycling(k, 2), np.zeros(1536, int)]
    result = measuring.measure_run(stored_run(ids, k, kept=512), positions=1)
    s, first = result["summary"], result["first_n"]
    assert s["tokens_evaluated"] == 2048 and s["tokens_kept"] == 512 and s["mismatch"] == 0
    assert s["kept_perplexity"] == pytest.approx(k)
    assert s["perplexity"] == pytest.approx(metrics.perplexity(torch.bincount(torch.from_numpy(ids), minlength=k)))
    assert list(first.n_tokens) == [32, 64, 128, 256, 512, 2048]
    assert list(first.source) == ["embeddings"] * 5 + ["counts"]
    assert first.n_tokens.iloc[-1] == 2048 and first.perplexity.iloc[-1] == pytest.approx(s["perplexity"])


def test_measure_run_says_when_the_recomputed_ids_disagree_with_the_counts():
    k = 64
    ids = cycling(k, 4)
    run = stored_run(ids, k)
    run["final"]["counts"] = torch.bincount(torch.from_numpy(np.r_[ids[:-2], 0, 0]), minlength=k)  # two moved
    assert measuring.measure_run(run, positions=1)["summary"]["mismatch"] == pytest.approx(2 / len(ids))


def test_measure_run_without_kept_embeddings_says_so():
    run = stored_run(cycling(16, 2), 16)
    run["final"]["embeddings"] = torch.empty(0, 3)
    with pytest.raises(ValueError, match="kept no evaluation embeddings"):
        measuring.measure_run(run, positions=1)


def test_measuring_imports_numpy_pandas_torch_the_quantizer_and_the_metrics_only():
    tree = ast.parse(Path(measuring.__file__).read_text())
    top = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "vqstudy" for alias in node.names}
    assert top <= {"math", "numpy", "pandas", "torch", "vqstudy"}, sorted(top)
    assert names <= {"quantizer", "metrics"}, sorted(names)


# --- PQ1 (measuring_collapse) -------------------------------------------------------------------

def pq_table(ratios: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """One row per (setting, regime, seed): ``ratios[setting][regime]`` is the per-batch /
    whole-set perplexity, a number (every seed) or a tuple (one per seed); whole-set
    perplexity 100 (C1's setting, K = 1024, batch 256) or 1000 (CIFAR-10, K = 2048, batch 4096)."""
    shape = {"synthetic": (1024, 256, 100.0), "cifar10": (2048, 4096, 1000.0)}
    rows = []
    for setting, by_regime in ratios.items():
        k, b, whole = shape[setting]
        for regime, r in by_regime.items():
            for i, seed in enumerate(seeds):
                ratio = r[i] if isinstance(r, tuple) else r
                rows.append({"setting": setting, "regime": regime, "seed": seed, "codebook_size": k,
                             "batch_tokens": b, "perplexity": whole, "batch_perplexity": whole * ratio})
    return pd.DataFrame(rows)


HOLDS = {"synthetic": {"baseline": (0.8, 0.7, 0.85), "pretrain": 0.3},
         "cifar10": {"baseline": (0.88, 0.8, 0.86), "pretrain": 0.7}}


def test_pq1_holds_when_per_batch_perplexity_is_at_least_10_percent_below_everywhere():
    v = findings.check_batch_understates(pq_table(HOLDS))
    assert v.holds and v.claim == "PQ1" and v.role == "finding" and v.rule == findings.PQ1_RULE
    assert v.statement == findings.PQ1_QUESTION and v.seeds == [0, 1, 2]
    assert [c.name.split(":")[0] for c in v.conditions] == ["C1's setting", "C3's setting (CIFAR-10)"]
    c1, c3 = v.conditions
    assert (c1.comparison, c1.threshold, c1.scope) == ("<=", 0.9, "every seed")
    assert c1.values == pytest.approx({0: 0.8, 1: 0.7, 2: 0.85}) and c1.margin == pytest.approx(0.05)
    assert c3.deciding == pytest.approx(0.88) and "256 tokens, 0.25 K, K = 1024" in c1.name
    assert "4096 tokens, 2 K, K = 2048" in c3.name
    assert v.numbers["synthetic_pretrain_ratio"] == pytest.approx(0.3)
    assert v.numbers["cifar10_baseline_ratio"] == pytest.approx((0.88 + 0.8 + 0.86) / 3)
    assert v.numbers["cifar10_batch_tokens"] == 4096 and v.numbers["synthetic_k"] == 1024
    assert v.numbers["synthetic_pretrain_batch"] == pytest.approx(30) and v.numbers["worst"] == pytest.approx(0.88)
    assert "C1's setting 30%–85%" in v.headline


@pytest.mark.parametrize("setting, index", [("synthetic", 0), ("cifar10", 1)])
def test_pq1_fails_when_one_seed_of_one_regime_is_within_10_percent(setting, index):
    ratios = {s: dict(r) for s, r in HOLDS.items()}
    ratios[setting]["baseline"] = (0.8, 0.95, 0.85)   # seed 1 reads 95% of the whole set
    v = findings.check_batch_understates(pq_table(ratios))
    assert not v.holds and [i for i, c in enumerate(v.conditions) if not c.holds] == [index]
    c = v.conditions[index]
    assert c.deciding == pytest.approx(0.95) and c.margin == pytest.approx(-0.05) and c.flips_without_seed == [1]


def test_pq1_fails_where_per_batch_reads_more_than_the_whole_set():
    ratios = {s: dict(r) for s, r in HOLDS.items()}
    ratios["cifar10"]["pretrain"] = 1.2
    v = findings.check_batch_understates(pq_table(ratios))
    assert [c.holds for c in v.conditions] == [True, False] and v.numbers["worst"] == pytest.approx(1.2)


@pytest.mark.parametrize("setting, index", [("synthetic", 0), ("cifar10", 1)])
def test_pq1_at_its_threshold_holds(setting, index):
    """Per-batch exactly 90% of the whole set (90 / 100, 900 / 1000: exactly 0.9 in floating point)."""
    ratios = {s: dict(r) for s, r in HOLDS.items()}
    ratios[setting]["baseline"] = (0.8, 0.9, 0.85)
    v = findings.check_batch_understates(pq_table(ratios))
    c = v.conditions[index]
    assert v.holds and c.deciding == c.threshold == 0.9 and c.margin == 0
    ratios[setting]["baseline"] = (0.8, 0.9000001, 0.85)
    assert not findings.check_batch_understates(pq_table(ratios)).conditions[index].holds


def test_pq1_on_one_setting_and_without_runs():
    v = findings.check_batch_understates(pq_table({"synthetic": HOLDS["synthetic"]}))
    assert v.holds and len(v.conditions) == 1
    empty = findings.check_batch_understates(pq_table({}).reindex(columns=["setting", "regime", "seed"]))
    assert not empty.holds and empty.conditions[0].detail == "no runs"


def test_pq1_a_missing_perplexity_fails():
    df = pq_table(HOLDS)
    df.loc[(df.setting == "synthetic") & (df.seed == 2) & (df.regime == "pretrain"), "batch_perplexity"] = math.nan
    v = findings.check_batch_understates(df)
    assert [c.holds for c in v.conditions] == [False, True]
