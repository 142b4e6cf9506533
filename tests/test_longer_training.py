"""The Longer training chapter's data (vqstudy.recorded) on hand-made records: verdicts by
schedule judged again with today's rules, parts not recorded yet or still running, what
holds as training converges, C3's lead against the schedule, the times of each part, the
scorecard's view of the newest record; and the chapter itself, executed where no record is
committed, saying so."""

import json
from pathlib import Path

import nbformat
import pytest

from vqstudy import claims, convergence, plots, recorded, runner

STEPS = {"tokens_collapse": 2000, "cifar10_scaling": 1000}


def curves(total: int, moving: bool) -> dict:
    """Training curves of a run at rest over its last quarter, or still moving."""
    steps = [0, total // 2, 3 * total // 4, total]
    mse = [2.0, 1.2, 1.0, 0.8 if moving else 1.0]
    return {"step": steps, "phase": ["vq"] * 4, "loss": [None] * 4, "mse": mse, "perplexity": [5.0] * 4,
            "usage": [0.5] * 4, "dead_tokens": [0] * 4}


def write_part(root: Path, record: str, chapter: str, schedule: int, rows: list[dict], finished: bool = True,
               started: str = "2026-12-07T18:00:00+00:00", planned: int | None = None) -> Path:
    """A part as `make record` writes it, with runs made from ``rows`` (swept point and
    final metrics); every second run's curves still move at the end."""
    part = recorded.part_dir(root / record, chapter, schedule)
    part.mkdir(parents=True)
    total = STEPS[chapter] * schedule
    runs = []
    for i, row in enumerate(rows):
        point = {k: row[k] for k in ("codebook_size", "regime", "seed")}
        metrics = {k: v for k, v in row.items() if k not in point}
        runs.append({"point": point, "config": {"total_steps": total, "seed": row["seed"]}, "metrics": metrics,
                     "autoencoder_mse_at_vq_init": 0.5, "seconds": 1.0, "curves": curves(total, moving=i % 2 == 1)})
    (part / recorded.RUNS_FILE).write_text(json.dumps({"chapter": chapter, "runs": runs}))
    (part / recorded.PROVENANCE_FILE).write_text(json.dumps({
        "record": record, "chapter": chapter, "profile": "long", "schedule": schedule,
        "parameters": {"total_steps": total, "pretrain_steps": total // 2}, "runs": planned or len(runs),
        "commit": "abcdef1234567", "cpu": "AMD EPYC", "cores": 2, "torch_threads": 1, "workers": 2,
        "started": started, "finished": "2026-12-08T09:30:00+00:00" if finished else None,
        "wall_seconds": 3725.0 if finished else None, "sweep_seconds": 3600.0 if finished else None}))
    return part


def c1_rows(collapse: bool) -> list[dict]:
    """C1's runs at K = 64 and 1024: with ``collapse``, baseline uses few tokens at the
    largest K (C1 holds); without, baseline uses more than pretrain (C1 does not)."""
    rows = []
    for seed in (0, 1, 2):
        for k in (64, 1024):
            big = k == 1024
            rows.append({"codebook_size": k, "regime": "baseline", "seed": seed,
                         "perplexity": (20.0 if big else 30.0) + seed, "usage": (0.1 if collapse else 0.99) if big
                         else 0.6, "codebook_spread": 0.05, "mse": 1.0 + 0.01 * seed})
            rows.append({"codebook_size": k, "regime": "pretrain", "seed": seed,
                         "perplexity": (700.0 if big else 40.0) + seed, "usage": 0.9, "codebook_spread": 1.0,
                         "mse": 0.8 + 0.01 * seed})
    return rows


def c3_rows(baseline: dict, pretrain: dict) -> list[dict]:
    """C3's runs: seed-mean test MSE per K for each regime (seeds ±1%)."""
    rows = []
    for seed in (0, 1, 2):
        for regime, mse in (("baseline", baseline), ("pretrain", pretrain)):
            for k, m in mse.items():
                rows.append({"codebook_size": k, "regime": regime, "seed": seed, "mse": m * (1 + 0.01 * (seed - 1)),
                             "perplexity": 50.0 if regime == "baseline" else 400.0 + k / 100,
                             "usage": 0.1 if regime == "baseline" else 0.8 + k / 1e5, "dead_tokens": 10})
    return rows


@pytest.fixture
def record(tmp_path) -> Path:
    """C1 holds at ×1 and not at ×4, ×16 still running; C3 at ×1 and ×4, where baseline
    catches up at K = 8192; C2 not recorded at all."""
    write_part(tmp_path, "long-cpu-2026-12-07", "tokens_collapse", 1, c1_rows(collapse=True))
    write_part(tmp_path, "long-cpu-2026-12-07", "tokens_collapse", 4, c1_rows(collapse=False))
    write_part(tmp_path, "long-cpu-2026-12-07", "tokens_collapse", 16, c1_rows(collapse=False)[:4], finished=False,
               planned=12)
    write_part(tmp_path, "long-cpu-2026-12-07", "cifar10_scaling", 1,
               c3_rows({512: 1.0, 2048: 0.99, 8192: 0.985}, {512: 0.8, 2048: 0.7, 8192: 0.6}))
    write_part(tmp_path, "long-cpu-2026-12-07", "cifar10_scaling", 4,
               c3_rows({512: 0.7, 2048: 0.6, 8192: 0.5}, {512: 0.6, 2048: 0.55, 8192: 0.52}))
    return tmp_path


def test_the_claims_a_part_stands_for_are_its_judges(record):
    for part in recorded.parts(record):
        if recorded.finished(part):
            shown = [v.claim for v in recorded.rejudge(part) if v.role != "superseded"]
            assert tuple(shown) == recorded.CHAPTER_CLAIMS[part.parent.name]


def test_verdicts_by_schedule_judge_each_recorded_part_and_say_what_is_missing_or_running(record):
    folder = recorded.find(recorded.NEWEST, record)
    assert folder.name == "long-cpu-2026-12-07"
    table = recorded.verdicts_by_schedule(folder)
    assert list(dict.fromkeys(table.claim)) == ["C1", "C2", "C2h", "C3a", "C3b"]
    assert len(table) == 5 * 3
    cell = {(r["claim"], r["schedule"]): recorded.cell_text(r) for r in table.to_dict("records")}
    assert cell["C1", 1] == "holds (6 of 6 conditions) at 2000 steps; 6 of 12 runs converged"
    assert cell["C1", 4].startswith("does not hold (") and "at 8000 steps; 6 of 12 runs converged" in cell["C1", 4]
    assert cell["C1", 16] == "being recorded: 4 of 12 runs so far"
    assert cell["C2", 1] == cell["C2h", 16] == "not recorded yet"
    assert cell["C3b", 4].startswith("does not hold") and "at 4000 steps" in cell["C3b", 4]
    assert table.set_index(["claim", "schedule"]).loc[("C2", 16), "steps"] == 32000  # from the long profile


def test_the_statement_says_which_verdicts_belong_to_the_short_schedule(record):
    text = recorded.convergence_statement(recorded.verdicts_by_schedule(recorded.find(recorded.NEWEST, record)))
    short = next(line for line in text.splitlines() if "Belong to the short schedule" in line)
    assert "**C1** (holds at ×1, 2000 steps; does not hold at ×4, 8000 steps; 6 of 12 runs converged there)" in short
    assert "*Not recorded yet:* C2; C2h." in text
    assert "At each chapter's longest recorded schedule (C1 ×4, C3 ×4), 15 of 30 runs had converged" in text
    assert "a longer schedule could still move a verdict" in text
    empty = recorded.convergence_statement(recorded.verdicts_by_schedule(None))
    assert empty.startswith("No part of a long-schedule record is finished yet")


def test_c3s_lead_and_baselines_gain_against_the_schedule(record):
    runs = recorded.schedule_runs(recorded.find(recorded.NEWEST, record), "cifar10_scaling")
    lead = recorded.c3_lead(runs).set_index("schedule")
    assert lead.loc[1, "lead_512"] == pytest.approx(0.2) and lead.loc[4, "lead_8192"] == pytest.approx(1 - 0.52 / 0.5)
    assert lead.loc[1, "baseline_gain"] == pytest.approx(0.015) and lead.loc[4, "baseline_gain"] == pytest.approx(1 - 0.5 / 0.7)
    assert lead.loc[1, "caught_up"] == [] and lead.loc[4, "caught_up"] == [8192]
    assert recorded.catch_up_text(lead.reset_index()) == \
        "Baseline's test MSE is no higher than pretrain's at K = 8192 from 4000 steps (×4)."
    per_seed = recorded.c3_lead_per_seed(runs)
    assert len(per_seed) == 2 * 3 * 3 and set(per_seed.codebook_size) == {512, 2048, 8192}
    assert recorded.catch_up_text(recorded.c3_lead(recorded.schedule_runs(None, "cifar10_scaling"))).startswith(
        "C3 is not recorded yet")


def test_the_times_of_each_part_and_where_they_ran(record):
    times = recorded.timings(recorded.find(recorded.NEWEST, record))
    assert list(zip(times.chapter, times.schedule)) == [("tokens_collapse", 1), ("tokens_collapse", 4),
                                                        ("tokens_collapse", 16), ("cifar10_scaling", 1),
                                                        ("cifar10_scaling", 4)]
    assert times.state.tolist() == ["recorded"] * 2 + ["running"] + ["recorded"] * 2
    assert recorded.wall_text(times.wall_seconds[0]) == "1 h 2 min" and recorded.wall_text(78.0) == "1 min 18 s"
    assert recorded.machine_text(times) == "AMD EPYC, 2 cores, 2 worker processes of 1 torch thread each, commit abcdef1"
    assert times.run_seconds.tolist() == [12.0, 12.0, 4.0, 18.0, 18.0]  # each run's own seconds, summed
    html = plots.timings_table(times, recorded.wall_text).to_html()
    assert "sittings" not in html and "12 s" in html


def test_a_part_finished_in_a_later_sitting_says_so_beside_its_wall_time(record):
    part = recorded.part_dir(record / "long-cpu-2026-12-07", "cifar10_scaling", 4)
    prov = json.loads((part / recorded.PROVENANCE_FILE).read_text())
    prov.update(first_started="2026-12-07T17:00:00+00:00", sittings=2)
    (part / recorded.PROVENANCE_FILE).write_text(json.dumps(prov))
    times = recorded.timings(recorded.find(recorded.NEWEST, record))
    html = plots.timings_table(times, recorded.wall_text).to_html()
    assert "1 h 2 min (the last of 2 sittings, from 2026-12-07 17:00)" in html and html.count("sittings") == 1


def test_the_newest_record_is_found_by_when_it_started_and_an_unknown_one_is_refused(record):
    write_part(record, "long-cpu-2026-12-01", "tokens_collapse", 1, c1_rows(True), started="2026-12-01T00:00:00+00:00")
    write_part(record, "paper-gpu-2026-12-09", "tokens_collapse", 1, c1_rows(True), started="2026-12-09T00:00:00+00:00")
    assert recorded.find(recorded.NEWEST, record).name == "long-cpu-2026-12-07"  # paper-*: not a long record
    assert recorded.find("long-cpu-2026-12-01", record).name == "long-cpu-2026-12-01"
    with pytest.raises(ValueError, match=r"parameter record='nope': no record with a part under .*; recorded: "
                                         r"\['long-cpu-2026-12-01', 'long-cpu-2026-12-07', 'paper-gpu-2026-12-09'\]"):
        recorded.find("nope", record)
    assert recorded.find(recorded.NEWEST, record / "empty") is None


def test_the_scorecard_gets_each_claims_verdict_at_its_longest_finished_schedule(record, tmp_path):
    long = recorded.longest_verdicts(record)
    assert long["record"] == "long-cpu-2026-12-07" and long["date"] == "2026-12-07"
    c1 = long["verdicts"]["C1"]
    assert c1["schedule"] == 4 and c1["holds"] is False and c1["steps"] == [8000] and c1["date"] == "2026-12-08"
    assert {"C3a", "C3b"} <= set(long["verdicts"]) and "C2" not in long["verdicts"]
    assert recorded.longest_verdicts(tmp_path / "none") == {}
    # the runner passes it to the scorecard, with the chapter that renders the record
    (record / "records").mkdir()
    (record / "long-cpu-2026-12-07").rename(record / "records" / "long-cpu-2026-12-07")
    (record / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                     "  - file: book/claims/tokens_collapse\n  - file: book/claims/longer_training\n")
    folder = record / runner.EXECUTED_DIR
    folder.mkdir(parents=True)
    claims.record(claims.judge_tokens_collapse(recorded.run_set(
        record / "records/long-cpu-2026-12-07/tokens_collapse/x1").table), folder, "tokens_collapse")
    claims.record([], folder, "longer_training")
    for name in ("tokens_collapse", "longer_training"):
        nbformat.write(nbformat.v4.new_notebook(), folder / f"{name}.ipynb")
    page = runner.write_pages(record).read_text()
    assert "*Longest recorded schedule* (×4, record `long-cpu-2026-12-07` of 2026-12-07; {doc}`longer_training`): " \
           "✗ **does not hold at 8000 steps; 6 of 12 runs converged**" in page
    assert "## Chapters without verdicts of their own" in page


@pytest.mark.slow
def test_the_chapter_says_so_where_no_record_is_committed(tmp_path):
    """Executed in a copy of the sources without records/: no error, the table and the
    statement say nothing is recorded, every figure has its place and caption."""
    root = runner.copy_sources(tmp_path / "book")
    import shutil

    shutil.rmtree(root / "records", ignore_errors=True)
    out = runner.execute("longer_training", "smoke", root=root)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    text = json.dumps(nb)
    assert "not recorded yet" in text and "No part of a long-schedule record is finished yet" in text
    assert "no long-schedule record is committed" in text and "No part is recorded yet" in text
    glued = [o["metadata"]["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "application/papermill.record/image/png" in o.get("data", {})]
    assert glued == ["fig_c1", "fig_c2", "fig_c3", "fig_c3_lead"]
    assert claims.read(out.parent, "longer_training") == []  # ran to its end; judges nothing of its own
    assert "training nothing" in text  # its provenance


def test_the_chapter_is_executed_again_when_a_record_changes_and_the_others_are_not(tmp_path):
    root = runner.copy_sources(tmp_path / "book")
    assert (root / "records").is_dir() == (runner.REPO_ROOT / "records").is_dir()  # the book renders them
    assert runner.reads_records("longer_training", root) and not runner.reads_records("tokens_collapse", root)
    before = {name: runner.fingerprint(name, "quick", root) for name in ("longer_training", "tokens_collapse")}
    write_part(root / "records", "long-cpu-2099-01-01", "tokens_collapse", 1, c1_rows(True))
    after = {name: runner.fingerprint(name, "quick", root) for name in ("longer_training", "tokens_collapse")}
    assert after["longer_training"] != before["longer_training"]
    assert after["tokens_collapse"] == before["tokens_collapse"]


def test_how_far_from_converged_at_the_longest_finished_schedule(record):
    far = recorded.distance_to_convergence(record / "long-cpu-2026-12-07", "tokens_collapse")
    assert set(far.schedule) == {4} and set(far.steps) == {8000}  # ×16 is still running: not read
    by = far.set_index(["codebook_size", "regime"])
    assert by.loc[(1024, "baseline"), "converged"] == 3 and by.loc[(1024, "baseline"), "mse_change"] == 0
    assert by.loc[(1024, "pretrain"), "converged"] == 0  # its curves fall 20% over the last quarter
    assert by.loc[(1024, "pretrain"), "mse_change"] == pytest.approx(-0.2)
    assert by.loc[(64, "pretrain"), "mse_largest"] == pytest.approx(0.2)
    html = plots.convergence_distance_table(far, ["codebook_size", "regime"], convergence.METRICS).to_html()
    assert "-20.0% (20.0%) ✗" in html and "+0.0% (0.0%)" in html and "0 of 3" in html and "3 of 3" in html
    assert recorded.distance_to_convergence(record / "long-cpu-2026-12-07", "embeddings_collapse").empty
