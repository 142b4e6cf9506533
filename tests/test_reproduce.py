"""The reproduce-and-fork page works as written.

The fork: the session's smoke book (tests/conftest.py) copies notebooks/template.ipynb to
notebooks/my_claim.ipynb, copies the ``template:`` entry of profiles.yml to ``my_claim:``
and adds the chapter to the first part of _toc.yml, changes nothing else, and builds the
whole book; the new chapter must then be a chapter like the others. And every papermill or
sweep command the pages print names a real notebook and real parameters."""

import json
import re
import shlex

import nbformat
import pytest
import yaml

from vqstudy import claims, params, runner, sweeps
from vqstudy.params import REPO_ROOT


def test_the_template_is_registered_kept_without_outputs_and_not_in_the_book():
    nb = nbformat.read(REPO_ROOT / "notebooks" / "template.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert "template" not in runner.executed_notebooks()
    for profile in params.PROFILES:
        plan = sweeps.plan("template", profile)
        assert plan.configs and all(cfg.regime == "pretrain" for cfg in plan.configs)  # its `fixed:` rule
        assert len(plan.configs) == len(plan.params["codebook_size"]) * len(plan.params["seed"])


@pytest.mark.slow
def test_the_fork_changes_three_files_only(built_book):
    assert built_book.forked_files == {f"notebooks/{built_book.fork}.ipynb": "added",
                                       "notebooks/profiles.yml": "changed", "_toc.yml": "changed"}


@pytest.mark.slow
def test_a_forked_template_is_a_chapter_of_the_whole_smoke_book(built_book):
    root, name = built_book.root, built_book.fork
    assert name in runner.toc_parts(root)[0][1][-1]  # the last chapter of the first part
    folder = root / runner.EXECUTED_DIR
    recorded = json.loads((folder / f"{name}.verdict.json").read_text())
    assert recorded["notebook"] == name
    assert [(v["claim"], v["profile"], v["notebook"]) for v in recorded["verdicts"]] == [("T", "smoke", name)]

    page = (folder / "scorecard.md").read_text()
    part = page[page.index("**T**"):]  # the fork's verdict, then the chapters after it
    after = [part.index(f"**{v['claim']}**") for other in runner.executed_notebooks(root)
             if other != name and (recorded_other := claims.read(folder, other))
             for v in recorded_other if f"**{v['claim']}**" in part[5:]]
    entry = part[:min(after, default=len(part))]
    assert links_to(entry, name) and f"{name}.verdict.json" in entry and "`smoke`" in entry, entry
    summary = (folder / runner.SUMMARY).read_text()
    line = next(line for line in summary.splitlines() if re.search(r"\*\*T\b", line))  # claim T's line
    assert links_to(line, f"claims/{name}"), line

    html = (root / "_build" / "html" / "book" / "claims" / f"{name}.html").read_text()
    assert "Provenance." in html and "total_steps=60" in html  # the smoke value, in the provenance block
    assert "<img" in html
    assert "How to use this template" not in html  # the template's remove-cell note stays out
    intro = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert f"claims/{name}.html" in intro  # the introduction's summary links it


def links_to(text: str, target: str) -> bool:
    """Whether ``text`` has a {doc} link to ``target`` (with or without a link text)."""
    return bool(re.search(r"\{doc\}`(?:[^`<]*<)?" + re.escape(target) + r">?`", text))


def documented_commands(program: str) -> list[tuple[str, list[str]]]:
    """``(page, argv)`` of every command line starting with ``program`` on the book's pages
    and in the README (continuation lines joined)."""
    found = []
    for path in sorted((REPO_ROOT / "book").glob("*.md")) + [REPO_ROOT / "README.md"]:
        text = path.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().strip("`")
            if line.startswith(program):
                found.append((path.name, shlex.split(line.split("  #")[0])))
    return found


def test_every_documented_papermill_command_names_a_chapter_and_its_real_parameters():
    commands = [(page, argv) for page, argv in documented_commands(".venv/bin/papermill")
                if "--help-notebook" not in argv]
    assert commands
    for page, argv in commands:
        notebook = next(a for a in argv[1:] if a.endswith(".ipynb"))
        assert (REPO_ROOT / notebook).exists(), f"{page}: {notebook}"
        given = {}
        for flag, value, *rest in zip(argv, argv[1:], argv[2:] + [None]):
            if flag == "-p":
                given[value] = yaml.safe_load(rest[0])
            elif flag == "-y":
                given.update(yaml.safe_load(value))
        profile = given.pop("profile", params.DEFAULT_PROFILE)
        sweeps.plan(re.sub(r"^notebooks/|\.ipynb$", "", notebook), profile, given)  # raises on a bad name/type/range


def test_every_documented_sweep_command_names_a_chapter_and_its_real_parameters():
    commands = [(page, argv) for page, argv in documented_commands(".venv/bin/python -m vqstudy sweep")
                if "NAME" not in argv and "..." not in argv]
    assert commands
    for page, argv in commands:
        name = argv[4]
        profile = argv[argv.index("--profile") + 1] if "--profile" in argv else params.DEFAULT_PROFILE
        given = {value: yaml.safe_load(v) for flag, value, v in zip(argv, argv[1:], argv[2:]) if flag == "-p"}
        assert sweeps.plan(name, profile, given).configs, f"{page}: {argv}"
