"""The runner's contract with `make book`: a failed notebook leaves no verdict behind (not
even an old one) and the scorecard says so; Ctrl-C stops at once with exit code 130."""

import json

import nbformat

from vqstudy import runner

TOC = "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/claims/scorecard\n  - file: book/claims/broken\n"


def test_a_failed_notebook_leaves_no_stale_verdict_and_the_scorecard_says_so(tmp_path, capsys):
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('raise RuntimeError("this notebook is broken")')],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "notebooks" / "broken.ipynb")
    claims_dir = tmp_path / "book" / "claims"
    claims_dir.mkdir(parents=True)
    stale = claims_dir / "broken.verdict.json"
    stale.write_text(json.dumps({"holds": True, "conditions": []}))  # from an earlier, successful build

    assert runner.build_book("smoke", build=False, root=tmp_path) == 1
    assert not stale.exists()
    out = capsys.readouterr()
    assert "broken" in out.out and "FAILED" in out.out and "this notebook is broken" in out.out
    assert "**no verdict**" in (claims_dir / "scorecard.md").read_text()
    executed = nbformat.read(claims_dir / "broken.ipynb", as_version=4)
    assert any("remove-cell" in c.metadata.get("tags", []) for c in executed.cells
               if "injected-parameters" in c.metadata.get("tags", []))


def test_ctrl_c_stops_the_build_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    (tmp_path / "_toc.yml").write_text(TOC)
    calls = []

    def interrupted(name, profile, root):
        calls.append(name)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", interrupted)
    assert runner.build_book("smoke", root=tmp_path) == 130
    assert calls == ["broken"]
    assert not (tmp_path / "book" / "claims" / "scorecard.md").exists()  # no half-made book
    assert "run the same command again to resume" in capsys.readouterr().err


def test_unknown_profile_or_notebook_is_refused(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOC)
    assert runner.build_book("fast", root=tmp_path) == 2
    assert runner.build_book("smoke", only=["nope"], root=tmp_path) == 2


def test_copy_sources_leaves_build_products_behind(tmp_path):
    dst = runner.copy_sources(tmp_path / "copy")
    assert (dst / "_toc.yml").exists() and (dst / "notebooks" / "tokens_collapse.ipynb").exists()
    assert (dst / "book" / "intro.md").exists() and not (dst / "book" / "claims").exists()


def test_progress_bars_are_dropped_from_the_chapter_but_warnings_kept():
    from vqstudy.runner import without_progress_bars

    bar = "C1 runs:  25%|██▌       | 1/4 [00:04<00:14,  4.81s/it]\rbaseline K=8 seed=0:   7%|▋  | 4/60 [00:00<00:08,  6.70it/s]\n"
    outputs = [{"output_type": "stream", "name": "stderr", "text": bar},
               {"output_type": "stream", "name": "stderr", "text": bar + "UserWarning: something real\n"},
               {"output_type": "stream", "name": "stderr", "text": "                \x1b[A\n"},
               {"output_type": "stream", "name": "stdout", "text": "C1 HOLDS\n"}]
    kept = without_progress_bars(outputs)
    assert [o["text"] for o in kept] == ["UserWarning: something real\n", "C1 HOLDS\n"]
