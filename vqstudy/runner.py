"""Execute the book's notebooks with papermill, then render the book with Jupyter Book.

The table of contents (``_toc.yml``) is the list of notebooks: an entry
``book/claims/NAME`` is executed from ``notebooks/NAME.ipynb`` at the chosen profile
into ``book/claims/NAME.ipynb`` (a build product), with ``book/claims`` as working
directory so that its verdict JSON lands beside it. Then the scorecard page is written
from the verdicts (:mod:`vqstudy.scorecard`) and the book rendered
(``execute_notebooks: off``) with Sphinx warnings as errors.

A notebook that fails is reported with its error; the others still run and keep their
results, the book is still rendered (the scorecard says which verdict is missing), and
the command exits non-zero. Ctrl-C or SIGTERM stops at once, prints what finished, and
exits 130: training runs that completed are in the run cache, so the next ``make book``
resumes where this one stopped.
"""

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
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


# Pages of book/claims/ that the runner writes itself rather than executes.
GENERATED_PAGES = ("scorecard",)


def executed_notebooks(root: Path = REPO_ROOT) -> list[str]:
    """Names of the notebooks the book shows as executed chapters."""
    prefix = EXECUTED_DIR.as_posix() + "/"
    return [f[len(prefix):] for f in toc_files(root)
            if f.startswith(prefix) and f[len(prefix):] not in GENERATED_PAGES]


def copy_sources(destination: Path, root: Path = REPO_ROOT) -> Path:
    """Copy the book's sources (top-level files, ``book/`` without its build products,
    ``notebooks/``) to ``destination``: a place to build the book at another profile,
    e.g. in a test, without touching the real ``book/claims`` and ``_build``."""
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    for path in root.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, destination / path.name)
    shutil.copytree(root / "book", destination / "book", dirs_exist_ok=True,
                    ignore=lambda folder, names: [EXECUTED_DIR.name] if Path(folder) == root / "book" else [])
    shutil.copytree(root / "notebooks", destination / "notebooks", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return destination


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
    # A verdict left by an earlier build must not stand in for this one if it fails.
    (out_dir / f"{name}.verdict.json").unlink(missing_ok=True)
    try:
        papermill.execute_notebook(str(source), str(output), parameters={"profile": profile, **(parameters or {})},
                                   cwd=str(out_dir), kernel_name="python3", progress_bar=progress_bar(name))
    except BaseException:  # a failed notebook is still rendered, with its error
        with contextlib.suppress(Exception):
            hide_injected_parameters(output)
        raise
    hide_injected_parameters(output)
    return output


def progress_bar(name: str) -> dict:
    """papermill's bar of the notebook's cells, named after it and kept short: while a
    cell trains, the notebook's own bars (runs, steps; on the terminal, from the kernel
    process) draw over this line, and a short bar leaves no stale tail behind them."""
    return {"desc": name, "unit": "cell",
            "bar_format": "{desc} {bar:10} {n_fmt}/{total_fmt} cells"}


def hide_injected_parameters(path: Path) -> None:
    """papermill's injected cell is for the machine; the chapter shows parameters itself."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
        if cell.cell_type == "code":
            cell.outputs = without_progress_bars(cell.get("outputs", []))
    nbformat.write(nb, path)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # tqdm moves the cursor up between bars
PROGRESS_LINE = re.compile(r"\|.*\[\d+:\d+.*(it/s|s/it|\?it/s)")


def without_progress_bars(outputs: list) -> list:
    """The kernel forwards what the runs write to the terminal (tqdm bars on the
    process's stderr) into the notebook as well; in the book they are noise. Lines of
    progress bars are dropped from stderr streams, anything else (warnings) is kept."""
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            lines = [line for line in re.split(r"[\r\n]", out.get("text", ""))
                     if ANSI_ESCAPE.sub("", line).strip() and not PROGRESS_LINE.search(line)]
            if not lines:
                continue
            out["text"] = "\n".join(lines) + "\n"
        kept.append(out)
    return kept


def build_html(root: Path = REPO_ROOT) -> int:
    """Render the book; Sphinx warnings are errors (a missing figure fails the build)."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(root), "--warningiserror", "--keep-going"]
    return subprocess.call(cmd, cwd=root)


def verdict_line(verdict: dict | None) -> str:
    if verdict is None:
        return "no verdict recorded"
    conditions = verdict["conditions"]
    return (f"{'holds' if verdict['holds'] else 'DOES NOT HOLD'} "
            f"({sum(c['holds'] for c in conditions)}/{len(conditions)} conditions)")


def error_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"FAILED: {exc.__class__.__name__}: {text.splitlines()[-1] if text else ''}"


def interrupted_in_kernel(exc: Exception) -> bool:
    """Ctrl-C reaches the kernel too; papermill reports it as the cell's error."""
    return getattr(exc, "ename", "") == "KeyboardInterrupt"


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def build_book(profile: str = "quick", only: list[str] | None = None, build: bool = True,
               root: Path = REPO_ROOT) -> int:
    """Execute the toc's notebooks (or ``only`` those), write the scorecard, render.

    Prints a header per notebook (papermill draws a bar of its cells, the notebook's
    sweep a bar of its runs and of each run's steps) and a one-line summary per notebook
    at the end: wall time and verdict."""
    if profile not in PROFILES:
        print(f"error: --profile {profile!r} is not a profile; allowed: {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    names = executed_notebooks(root)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        print(f"error: --only {unknown} not in _toc.yml; the book's notebooks are {names}", file=sys.stderr)
        return 2
    todo = [name for name in names if not only or name in only]
    summary, failed = [], []
    book_started = time.perf_counter()
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals only work there
    previous_sigterm = signal.signal(signal.SIGTERM, raise_keyboard_interrupt) if in_main_thread else None
    try:
        for i, name in enumerate(todo, 1):
            started = time.perf_counter()
            print(f"== [{i}/{len(todo)}] executing notebooks/{name}.ipynb at profile {profile}", flush=True)
            try:
                execute(name, profile, root)
                status = verdict_line(read_verdict(name, root))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # report, keep the other notebooks' results, go on
                if interrupted_in_kernel(exc):
                    raise KeyboardInterrupt from exc
                failed.append(name)
                status = error_line(exc)
            summary.append(f"{name:<28} {time.perf_counter() - started:7.1f} s   {status}")
            print(f"== {summary[-1]}", flush=True)
    except KeyboardInterrupt:
        print("\n== interrupted; finished so far:\n" + ("\n".join(summary) or "(none)"), file=sys.stderr)
        print("Training runs that completed are in the run cache; run the same command again to resume.",
              file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)

    from vqstudy import scorecard

    page = scorecard.write(root)
    print(f"\n== summary ({profile}, {time.perf_counter() - book_started:.0f} s; scorecard: {page.relative_to(root)})")
    print("\n".join(summary))
    code = 0
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {failed}; executed copies with the error are in {EXECUTED_DIR}/",
              file=sys.stderr)
        code = 1
    if build:
        built = build_html(root)
        print(f"== HTML {'built' if built == 0 else 'build FAILED (Sphinx warnings are errors, see above)'}: "
              f"{root / '_build' / 'html' / 'index.html'}; "
              f"{time.perf_counter() - book_started:.0f} s in all", flush=True)
        code = built or code
    return code
