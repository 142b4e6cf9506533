"""Records (vqstudy.records): one command writes a part per chapter and schedule, resumes,
keeps no weights, and today's rules re-judge every committed record's run table."""

import json

import pytest

from vqstudy import claims, records


def test_a_schedule_multiplies_both_step_counts_and_a_bad_one_is_refused():
    assert records.schedule_overrides("cifar10_scaling", "long", 4) == {"total_steps": 4000, "pretrain_steps": 2000}
    with pytest.raises(ValueError, match=r"schedule=0 is invalid: must be a positive whole multiple"):
        records.schedule_overrides("cifar10_scaling", "long", 0)


def test_the_long_profile_records_the_paper_chapters_on_their_deciding_sub_sweeps():
    assert records.chapters_with("long") == ["tokens_collapse", "embeddings_collapse", "cifar10_scaling"]
    from vqstudy import params

    assert params.resolve("tokens_collapse", "long")["codebook_size"] == [64, 1024]
    assert params.resolve("embeddings_collapse", "long")["hidden"] == [2, 16, 256]
    assert params.resolve("cifar10_scaling", "long")["codebook_size"] == [512, 2048, 8192]
    with pytest.raises(ValueError, match=r"chapters \['vq_fixes'\] have no 'long' entry"):
        records.record("r", "long", only=["vq_fixes"])


@pytest.mark.slow
def test_a_record_writes_its_parts_resumes_and_is_re_judged(tmp_path, capsys):
    written = records.record("r", "smoke", schedules=[1, 2], only=["tokens_collapse"], workers=1, root=tmp_path)
    assert [p.name for p in written] == ["x1", "x2"]
    x2 = tmp_path / "r" / "tokens_collapse" / "x2"
    assert {p.name for p in x2.iterdir()} == {"runs.json", "provenance.json", "tokens_collapse.ipynb",
                                              "tokens_collapse.verdict.json"}
    stored = json.loads((x2 / "runs.json").read_text())
    assert len(stored["runs"]) == 4 and stored["parameters"]["total_steps"] == 120
    run = stored["runs"][0]
    assert set(run) >= {"point", "config", "metrics", "curves"} and "final" not in run and "init" not in run
    assert run["config"]["total_steps"] == 120 and run["curves"]["step"][-1] == 120
    prov = records.provenance(x2)
    assert prov["finished"] and prov["wall_seconds"] > 0 and prov["commit"] and prov["cpu"] and prov["schedule"] == 2
    verdict = claims.read(x2, "tokens_collapse")[0]
    assert verdict["steps"] == [120] and verdict["runs"] == 4
    assert records.changed_verdicts(x2) == []
    # resumable: finished parts are skipped
    assert records.record("r", "smoke", schedules=[1, 2], only=["tokens_collapse"], workers=1, root=tmp_path) == []
    assert "already recorded" in capsys.readouterr().out
    # a recorded verdict that today's rule would change is reported
    data = json.loads((x2 / "tokens_collapse.verdict.json").read_text())
    data["verdicts"][0]["holds"] = not data["verdicts"][0]["holds"]
    (x2 / "tokens_collapse.verdict.json").write_text(json.dumps(data))
    changed = records.changed_verdicts(x2)
    assert len(changed) == 1 and "C1 was recorded as" in changed[0]
    table = records.summary_table(tmp_path)
    assert table.schedule.tolist() == [1, 2] and table.steps.tolist() == ["60 steps", "120 steps"]
    # a part interrupted in an earlier sitting: the resumed one keeps when it first started and counts sittings
    prov = records.provenance(x2)
    (x2 / "provenance.json").write_text(json.dumps({**prov, "started": "2026-12-07T18:00:00+00:00", "finished": None}))
    records.record("r", "smoke", schedules=[2], only=["tokens_collapse"], workers=1, root=tmp_path)
    resumed = records.provenance(x2)
    assert resumed["first_started"] == "2026-12-07T18:00:00+00:00" and resumed["sittings"] == 2
    assert resumed["started"] > resumed["first_started"] and resumed["finished"]


COMMITTED = records.parts()


@pytest.mark.parametrize("part", COMMITTED or [None], ids=[f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
                                                          for p in COMMITTED] or ["none"])
def test_every_committed_record_keeps_its_verdicts_under_todays_rules(part):
    """A rule change that would flip a recorded verdict fails here: log the change and
    record again, or re-run."""
    if part is None:
        pytest.skip("no record is committed under records/")
    assert records.changed_verdicts(part) == []
    prov = records.provenance(part)
    assert {"commit", "cpu", "torch_threads", "started", "parameters"} <= set(prov)
    table = records.run_set(part).table
    assert len(table) == prov["runs"] or prov["finished"] is None


def test_a_chapter_reads_a_recorded_configuration_instead_of_training_it_and_a_missing_one_is_named():
    """cifar10_robustness at quick takes its `longer` setting from the long record's x4 part of C3:
    exactly those configurations (fields the record predates at their defaults), no others."""
    from vqstudy import params, recorded, sweeps

    record = recorded.find(recorded.NEWEST)
    P = params.resolve("cifar10_robustness", "quick")
    assert "longer" in P["recorded_settings"] and "longer" not in P["setting"]  # not trained by the sweep
    overrides = {k: v for k, v in P.items() if k != "profile"}
    overrides["setting"] = P["recorded_settings"]
    plan = sweeps.plan("cifar10_robustness", "quick", overrides)
    found = recorded.stored_runs(record, plan.configs, plan.points)
    assert len(found.table) == len(plan.configs) == 4
    assert set(found.table.total_steps) == {4000} and set(found.table.setting) == {"longer"}
    assert [r["config"]["codebook_size"] for r in found.results] == [c.codebook_size for c in plan.configs]
    three_times = [c.replace(total_steps=3000, pretrain_steps=1500) for c in plan.configs]  # no such part
    with pytest.raises(ValueError, match="holds no run trained with .*total_steps=3000"):
        recorded.stored_runs(record, three_times, plan.points)
