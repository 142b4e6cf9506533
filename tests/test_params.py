"""Chapter parameters: one profiles file, one validation, and a parameters cell generated
from it that papermill can describe (``papermill --help-notebook``)."""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml

from vqstudy import params
from vqstudy.params import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
CHAPTERS = sorted(yaml.safe_load((NOTEBOOKS / "profiles.yml").read_text()))  # every notebook with an entry


def test_every_profiles_entry_has_its_notebook_and_every_notebook_its_entry():
    assert CHAPTERS == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def test_profiles_resolve_with_overrides():
    quick = params.resolve("tokens_collapse", "quick")
    smoke = params.resolve("tokens_collapse", "smoke", {"seed": [4, 5]})
    assert quick["profile"] == "quick" and len(quick["seed"]) >= 3
    assert smoke["profile"] == "smoke" and smoke["seed"] == [4, 5] and smoke["total_steps"] < quick["total_steps"]
    lr = params.resolve("tokens_collapse", "smoke", {"lr": 1})["lr"]
    assert lr == 1.0 and isinstance(lr, float)  # an int may stand for a float
    assert params.resolve("tokens_collapse", "smoke", {"seed": (3,)})["seed"] == [3]


@pytest.mark.parametrize("profile, overrides, message", [
    ("fast", {}, "parameter profile='fast' is not a profile: allowed ['smoke', 'quick', 'long', 'paper']"),
    ("smoke", {"codebok_size": [8]}, "unknown parameter 'codebok_size' (value [8]) for notebook 'tokens_collapse'"),
    ("smoke", {"seeds": [1]}, "unknown parameter 'seeds'"),  # the old name
    ("smoke", {"total_steps": "100"}, "parameter total_steps='100' has the wrong type: expected int"),
    ("smoke", {"total_steps": 10.5}, "parameter total_steps=10.5 has the wrong type: expected int"),
    ("smoke", {"total_steps": True}, "parameter total_steps=True has the wrong type"),
    ("smoke", {"seed": 3}, "parameter seed=3 has the wrong type: expected a non-empty list of int"),
    ("smoke", {"seed": []}, "parameter seed=[] has the wrong type"),
    ("smoke", {"seed": [0, "a"]}, "parameter seed[1]='a' has the wrong type: expected int"),
    ("smoke", {"regime": "baseline"}, "parameter regime='baseline' has the wrong type"),
])
def test_bad_names_and_types_are_refused_naming_the_parameter_and_the_value(profile, overrides, message):
    with pytest.raises(ValueError) as err:
        params.resolve("tokens_collapse", profile, overrides)
    assert message in str(err.value)


def test_an_unknown_notebook_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"notebook 'nope' has no entry in .*profiles.yml; known: \["):
        params.resolve("nope", "smoke")


def parameters_cell(name: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: {len(cells)} cells tagged parameters"
    return cells[0].source


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_parameters_cell_is_the_one_generated_from_profiles(name):
    """`python -m vqstudy parameters NAME --write` after every edit of the entry: the cell
    and profiles.yml cannot drift apart."""
    assert parameters_cell(name) == params.parameters_cell(name), (
        f"notebooks/{name}.ipynb's parameters cell differs from its profiles entry: run "
        f"`.venv/bin/python -m vqstudy parameters {name} --write`")


def test_parameters_cell_follows_its_entry(tmp_path):
    """The generator is not a constant: a parameter added to an entry appears in the cell."""
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump({"mine": {
        "sweep": ["seed"], "help": {"width_note": "a note that is not a training setting"},
        "defaults": {"seed": [0, 1], "total_steps": 100, "width_note": "wide"}, "quick": {"total_steps": 50}}}))
    cell = params.parameters_cell("mine", tmp_path)
    assert "seed: list[int] = None  # swept: random seed" in cell and cell.rstrip().endswith("quick: wide")
    assert "total_steps: int = None  # optimizer steps in all, in both regimes. quick: 50" in cell
    assert "width_note: str = None  # a note that is not a training setting. quick: wide" in cell


def test_the_parameters_command_writes_the_cell(tmp_path, capsys):
    from vqstudy.__main__ import main

    notebook = tmp_path / "template.ipynb"
    nb = nbformat.read(NOTEBOOKS / "template.ipynb", as_version=4)
    next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source = "profile = 'quick'"
    nbformat.write(nb, notebook)
    (tmp_path / "profiles.yml").write_text((NOTEBOOKS / "profiles.yml").read_text())
    assert main(["parameters", str(notebook), "--write"]) == 0
    written = nbformat.read(notebook, as_version=4)
    assert next(c for c in written.cells if "parameters" in c.metadata.get("tags", [])).source == \
        params.parameters_cell("template")


HELP_LINE = re.compile(r"^  (\w+): (.+?) \(default (.*?)\)\s*(.*)$")


def papermill_help(name: str) -> dict:
    """``{parameter: (type, help)}`` as ``papermill --help-notebook`` prints them."""
    papermill = Path(sys.executable).with_name("papermill")  # the one beside this Python, as .venv/bin/papermill
    out = subprocess.run([str(papermill), "--help-notebook", str(NOTEBOOKS / f"{name}.ipynb")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found, lines = {}, out.stdout.splitlines()
    for i, line in enumerate(lines):
        if m := HELP_LINE.match(line):
            text = m[4] or (lines[i + 1].strip() if i + 1 < len(lines) and not HELP_LINE.match(lines[i + 1]) else "")
            found[m[1]] = (m[2], text)
    return found


def shown(value) -> str:
    return ", ".join(value) if isinstance(value, dict) else str(value)


def test_papermill_lists_every_parameter_with_its_type_quick_value_and_meaning():
    with ThreadPoolExecutor(4) as pool:  # a papermill process each, side by side
        helps = dict(zip(CHAPTERS, pool.map(papermill_help, CHAPTERS)))
    for name, found in helps.items():
        entry = params.entry(name)
        quick = params.resolve(name, "quick")
        assert set(found) == {"profile", *entry["defaults"]}, name
        for parameter, (kind, text) in found.items():
            where = f"{name}: {parameter}"
            assert kind != "Unknown type", where
            assert "\n" not in text and text, where
            if parameter == "profile":
                continue
            assert text.endswith(f"quick: {shown(quick[parameter])}"), f"{where}: {text!r}"
            meaning = text[:-len(f"quick: {shown(quick[parameter])}")].removeprefix("swept: ").strip(" .")
            assert meaning, f"{where} has no meaning"
            assert text.startswith("swept: ") == (parameter in entry.get("sweep", [])), where


def test_a_meaning_with_an_equals_sign_still_reaches_papermill(tmp_path):
    """papermill drops a parameters-cell line with a second '=' from --help-notebook."""
    import papermill

    (tmp_path / "profiles.yml").write_text(yaml.safe_dump({"mine": {
        "help": {"note": "kept when k >= 2, k <= 9 and k != 5; k=3 is best"}, "defaults": {"note": "x"}}}))
    cell = params.parameters_cell("mine", tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell, metadata={"tags": ["parameters"]})],
                                  metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nbformat.write(nb, tmp_path / "mine.ipynb")
    found = papermill.inspect_notebook(str(tmp_path / "mine.ipynb"))
    assert set(found) == {"profile", "note"}
    assert found["note"]["help"] == "kept when k ≥ 2, k ≤ 9 and k ≠ 5; k＝3 is best. quick: x"
