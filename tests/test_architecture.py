"""The library's shape: no import circle between vqstudy's modules (read from the source,
imports inside functions included), every module importable on its own in a fresh
interpreter, and none of the removed machinery back (writing to the process's real
stderr, rewriting the outputs of executed cells)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vqstudy

PACKAGE = Path(vqstudy.__file__).resolve().parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def imports_of(source: str, modules: set) -> set:
    """The vqstudy modules a module's source imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vqstudy":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("vqstudy."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: from . import x, from .x import y
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("vqstudy.")}
    return found & modules


def import_graph(package: Path) -> dict:
    modules = {p.stem for p in package.glob("*.py")}
    return {p.stem: imports_of(p.read_text(), modules) - {p.stem} for p in sorted(package.glob("*.py"))}


def find_cycle(graph: dict) -> list | None:
    """A list of modules that import each other in a circle (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("from vqstudy import b\n")
    (tmp_path / "b.py").write_text("import os\n\ndef f():\n    from vqstudy.c import x\n")
    (tmp_path / "c.py").write_text("import vqstudy.a\n")
    (tmp_path / "d.py").write_text("from vqstudy import __version__, a\n")
    graph = import_graph(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    del graph["c"]
    assert find_cycle(graph) is None


def test_vqstudy_has_no_import_circle():
    graph = import_graph(PACKAGE)
    assert {"training", "runner", "scorecard", "claims", "findings"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
    # the pages, the checks (the paper's claims and the chapters' findings) and the form of a
    # condition are pure functions of data
    assert not graph["scorecard"] and graph["claims"] <= {"rules"} and not graph["rules"]
    assert graph["findings"] <= {"rules", "claims"}


def test_the_findings_import_pandas_numpy_and_the_checks_only():
    """vqstudy.findings judges run tables: pure functions of data, no torch, no training code."""
    tree = ast.parse((PACKAGE / "findings.py").read_text())
    top = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert top <= {"math", "numpy", "pandas", "vqstudy"}, f"findings imports {sorted(top)}"


IMPORT_EACH_ALONE = """
import importlib, sys, traceback
failed = []
for statement in sys.argv[1:]:
    for name in [m for m in sys.modules if m == "vqstudy" or m.startswith("vqstudy.")]:
        del sys.modules[name]  # no vqstudy module imported yet; third-party ones stay (torch is slow to load)
    try:
        for name in statement.split(","):
            importlib.import_module(name.strip())
    except BaseException:
        failed.append(statement + ":\\n" + traceback.format_exc())
print("\\n\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """One fresh interpreter; before each import every vqstudy module is forgotten, so
    each is imported first, as a user's script would (an import circle shows up as an
    ImportError of a partially initialised module)."""
    statements = [f"vqstudy.{m}" if m != "__init__" else "vqstudy" for m in MODULES]
    statements.append("vqstudy.scorecard, vqstudy.runner")  # the pages' module before the runner that uses it
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE, *statements], capture_output=True, text=True,
                         timeout=300, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_scorecard_and_runner_import_together_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", "import vqstudy.scorecard, vqstudy.runner"], capture_output=True,
                         text=True, timeout=300, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]


def code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines of code with comments and docstrings left out (what runs, not what is said)."""
    tree = ast.parse(path.read_text())
    docstrings = {node.body[0].lineno for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(i, line.split("#")[0]) for i, line in enumerate(path.read_text().splitlines(), 1) if i not in docstrings]


def test_no_module_writes_to_the_real_stderr_or_rewrites_cell_outputs():
    """Progress bars go to sys.stderr (the terminal under the sweep, the cell under a
    kernel); nothing reaches for the process's original stderr, and executed notebooks
    keep their outputs as the kernel produced them."""
    problems = []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        if "__stderr__" in text:
            problems.append(f"{path.name} mentions sys.__stderr__")
        for i, line in code_lines(path):
            if re.search(r"\.outputs\s*=[^=]|\[[\"']outputs[\"']\]\s*=[^=]", line):
                problems.append(f"{path.name}:{i} rewrites cell outputs: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_the_checker_would_see_a_rewrite(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Doc: cell.outputs = [] is only mentioned here."""\n\ndef f(cell):\n    cell.outputs = []\n'
                   '    cell["outputs"] = []  # not allowed either\n    return cell.outputs == []\n')
    hits = [i for i, line in code_lines(bad) if re.search(r"\.outputs\s*=[^=]|\[[\"']outputs[\"']\]\s*=[^=]", line)]
    assert hits == [4, 5]
