"""The reproduce-and-fork page works as written: the template notebook executes at smoke,
records a verdict the scorecard shows, and renders as a chapter of a clean book build;
the page's papermill command names a real notebook and real parameters."""

import json
import re
import shlex

import nbformat
import pytest
import yaml

from vqstudy import experiments, params, runner
from vqstudy.params import REPO_ROOT


def test_the_template_is_registered_and_kept_without_outputs():
    nb = nbformat.read(REPO_ROOT / "notebooks" / "template.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    names = {line.split("=")[0].strip() for line in parameters[0].source.splitlines()
             if "=" in line and not line.startswith("#")}
    assert names - {"profile"} == set(params.load_profiles()["template"]["defaults"])
    assert "template" in experiments.SWEEPS and "template" not in runner.executed_notebooks()
    assert nb.cells[-1].source.strip() == "provenance.show(P)"
    assert "remove-input" in nb.cells[-1].metadata["tags"]
    for profile in params.PROFILES:
        assert experiments.configs_for("template", profile)


@pytest.mark.slow
def test_the_template_executes_at_smoke_and_renders_as_a_book_chapter(tmp_path):
    root = runner.copy_sources(tmp_path / "book")
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    toc["chapters"] = [{"file": "book/claims/scorecard"}, {"file": "book/claims/template"}]  # the book entry
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    (root / "book" / "intro.md").write_text("# A fork\n\nIts first claim: {doc}`claims/template`.\n")

    assert runner.build_book("smoke", root=root) == 0  # executes, writes the scorecard, builds with -W
    verdict = json.loads((root / "book" / "claims" / "template.verdict.json").read_text())
    assert verdict["profile"] == "smoke" and verdict["claim"] == "T" and verdict["conditions"]
    assert verdict["statement"]
    html = root / "_build" / "html" / "book" / "claims"
    assert "**T**" in (root / "book" / "claims" / "scorecard.md").read_text()
    chapter = (html / "template.html").read_text()
    assert "Provenance." in chapter and "total_steps=60" in chapter
    assert "injected-parameters" not in chapter and "How to use this template" not in chapter
    assert "<img" in chapter


def papermill_commands():
    text = (REPO_ROOT / "book" / "reproduce.md").read_text().replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in text.splitlines() if line.strip().startswith(".venv/bin/papermill")]


def test_the_reproduce_page_papermill_command_names_real_parameters():
    commands = papermill_commands()
    assert commands
    for argv in commands:
        notebook = argv[1]
        assert (REPO_ROOT / notebook).exists(), notebook
        name = re.sub(r"^notebooks/|\.ipynb$", "", notebook)
        given = {}
        for flag, value in zip(argv, argv[1:]):
            if flag == "-p":
                given[value] = None
            elif flag == "-y":
                given.update(yaml.safe_load(value))
        profile = argv[argv.index("-p") + 2] if "-p" in argv else "quick"
        overrides = {k: v for k, v in given.items() if k != "profile" and v is not None}
        params.resolve(name, profile, overrides)  # raises on an unknown name, type or range
