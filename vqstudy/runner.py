"""Execute the book's notebooks with papermill, then render the book with Jupyter Book.

The table of contents (``_toc.yml``) is the list of notebooks: an entry
``book/claims/NAME`` is executed from ``notebooks/NAME.ipynb`` at the chosen profile
into ``book/claims/NAME.ipynb`` (a build product), with ``book/claims`` as working
directory so that its verdict JSON lands beside it. The book build only renders
(``execute_notebooks: off``). A notebook that fails is reported with its error; the
others still run and keep their results, and the command exits non-zero.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from vqstudy.params import PROFILES, REPO_ROOT

EXECUTED_DIR = Path("book") / "claims"


def toc_files(root: Path = REPO_ROOT) -> list[str]:
    """Every ``file:`` of ``_toc.yml``, in book order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts") or toc.get("chapters") or [])
    return found


def executed_notebooks(root: Path = REPO_ROOT) -> list[str]:
    """Names of the notebooks the book shows as executed chapters."""
    prefix = EXECUTED_DIR.as_posix() + "/"
    return [f[len(prefix):] for f in toc_files(root) if f.startswith(prefix)]


def read_verdict(name: str, root: Path = REPO_ROOT) -> dict | None:
    path = root / EXECUTED_DIR / f"{name}.verdict.json"
    return json.loads(path.read_text()) if path.exists() else None


def execute(name: str, profile: str, root: Path = REPO_ROOT, parameters: dict | None = None) -> Path:
    """Run ``notebooks/NAME.ipynb`` with papermill at ``profile`` into the book folder."""
    import papermill

    source = root / "notebooks" / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"_toc.yml lists {EXECUTED_DIR / name} but {source} does not exist")
    out_dir = root / EXECUTED_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(source), str(output), parameters={"profile": profile, **(parameters or {})},
                               cwd=str(out_dir), kernel_name="python3", progress_bar=True)
    hide_injected_parameters(output)
    return output


def hide_injected_parameters(path: Path) -> None:
    """papermill's injected cell is for the machine; the chapter shows parameters itself."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, path)


def build_html(root: Path = REPO_ROOT) -> int:
    """Render the book; Sphinx warnings are errors (a missing figure fails the build)."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(root), "--warningiserror", "--keep-going"]
    return subprocess.call(cmd, cwd=root)


def build_book(profile: str = "quick", only: list[str] | None = None, build: bool = True,
               root: Path = REPO_ROOT) -> int:
    if profile not in PROFILES:
        print(f"error: --profile {profile!r} is not a profile; allowed: {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    names = executed_notebooks(root)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        print(f"error: --only {unknown} not in _toc.yml; the book's notebooks are {names}", file=sys.stderr)
        return 2
    summary, failed = [], []
    for name in names:
        if only and name not in only:
            continue
        started = time.perf_counter()
        print(f"== executing {name} at profile {profile}", flush=True)
        try:
            execute(name, profile, root)
            verdict = read_verdict(name, root)
            status = "no verdict" if verdict is None else ("holds" if verdict["holds"] else "does not hold")
        except Exception as exc:  # report, keep the other notebooks' results, go on
            failed.append(name)
            status = f"FAILED: {exc.__class__.__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        summary.append(f"{name:<28} {time.perf_counter() - started:7.1f} s   {status}")
    print("\n== summary")
    print("\n".join(summary))
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {failed}; executed copies with the error are in {EXECUTED_DIR}/",
              file=sys.stderr)
        return 1
    if build:
        return build_html(root)
    return 0
