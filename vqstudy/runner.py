"""``python -m vqstudy book``: sweep, then narrate, then render.

The table of contents (``_toc.yml``) is the list of chapters: an entry ``book/claims/NAME``
is the notebook ``notebooks/NAME.ipynb``. For each chapter, in book order:

1. **sweep**: ``python -m vqstudy sweep notebooks/NAME.ipynb`` in its own process trains
   every run the chapter needs into the run cache (progress bars on the terminal, Ctrl-C,
   ``--scheduler``: the same command a user runs by hand);
2. **narrate**: papermill executes the notebook, which now reads its runs from the cache,
   into ``book/claims/NAME.ipynb`` (a build product), with ``book/claims`` as working
   directory so that its verdict JSON lands beside it.

Then the pages made from the verdicts (scorecard, the introduction's summary, the rule
log: :mod:`vqstudy.scorecard`) are written and the book rendered (``execute_notebooks:
off``) with Sphinx warnings as errors.

A chapter that fails is reported with its error; the others still run and keep their
results, the book is still rendered (the scorecard says which verdict is missing), and
the command exits non-zero. Ctrl-C or SIGTERM stops at once, prints what finished, and
exits 130: finished runs are in the run cache, so the same command resumes.
"""

import contextlib
import datetime
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from vqstudy import claims, params, scorecard
from vqstudy.params import PROFILES, REPO_ROOT

EXECUTED_DIR = Path("book") / "claims"
# Pages of book/claims/ that are generated from the verdicts, not executed.
GENERATED_PAGES = ("scorecard", "rule_log")
SUMMARY = "summary.md"  # book/claims/summary.md, included by the introduction


def toc_parts(root: Path = REPO_ROOT) -> list[tuple[str, list[str]]]:
    """``(caption, files)`` for each part of ``_toc.yml`` (one untitled part when the
    book has chapters but no parts)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())

    def files(node) -> list[str]:
        found = []
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                found += files(value)
        elif isinstance(node, list):
            for item in node:
                found += files(item)
        return found

    if toc.get("parts"):
        return [(part.get("caption", ""), files(part.get("chapters", []))) for part in toc["parts"]]
    return [("", files(toc.get("chapters", [])))]


def toc_files(root: Path = REPO_ROOT) -> list[str]:
    """Every ``file:`` of ``_toc.yml``, in book order."""
    return [f for _, files in toc_parts(root) for f in files]


def chapter_name(file: str) -> str | None:
    """``NAME`` for a toc entry ``book/claims/NAME`` that is an executed chapter."""
    prefix = EXECUTED_DIR.as_posix() + "/"
    name = file[len(prefix):] if file.startswith(prefix) else None
    return name if name not in GENERATED_PAGES else None


def executed_notebooks(root: Path = REPO_ROOT) -> list[str]:
    """Names of the notebooks the book shows as executed chapters, in book order."""
    return [name for f in toc_files(root) if (name := chapter_name(f))]


def copy_sources(destination: Path, root: Path = REPO_ROOT) -> Path:
    """Copy the book's sources (top-level files, ``book/`` without its build products,
    ``notebooks/``, and the committed ``records/`` that the book renders) to
    ``destination``: a place to build the book at another profile, e.g. in a test,
    without touching the real ``book/claims`` and ``_build``."""
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    for path in root.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, destination / path.name)
    shutil.copytree(root / "book", destination / "book", dirs_exist_ok=True,
                    ignore=lambda folder, names: [EXECUTED_DIR.name] if Path(folder) == root / "book" else [])
    shutil.copytree(root / "notebooks", destination / "notebooks", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    if (root / "records").is_dir():
        shutil.copytree(root / "records", destination / "records", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.tmp", ".ipynb_checkpoints"))
    return destination


def all_runs_cached(name: str, profile: str, root: Path = REPO_ROOT) -> bool:
    """Whether every run of the chapter is in the run cache already (no sweep needed)."""
    from vqstudy import runs, sweeps

    try:
        return all(runs.run_path(cfg).exists() for cfg in sweeps.plan(name, profile, notebooks=root / "notebooks").configs)
    except ValueError:  # a bad profile entry: the sweep reports it
        return False


def sweep(name: str, profile: str, root: Path = REPO_ROOT, scheduler: str | None = None) -> int:
    """Train the chapter's runs in a process of its own: ``python -m vqstudy sweep``."""
    if all_runs_cached(name, profile, root):
        print(f"{name} at {profile}: every run is in the run cache", flush=True)
        return 0
    command = [sys.executable, "-m", "vqstudy", "sweep", str(root / "notebooks" / f"{name}.ipynb"),
               "--profile", profile] + (["--scheduler", scheduler] if scheduler else [])
    process = subprocess.Popen(command, cwd=root)
    try:
        return process.wait()
    except BaseException:  # Ctrl-C reaches the sweep too; SIGTERM only us: stop it either way
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        process.kill()
        raise


def private_kernel_manager():
    """The kernel manager papermill uses: the kernel's channels are local (IPC) sockets
    in the user's private Jupyter runtime folder instead of TCP ports on localhost, which
    any local user could connect to."""
    from jupyter_client.manager import AsyncKernelManager

    class PrivateKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "transport": "ipc"})

    return PrivateKernelManager


class QuietInputPath:
    """papermill warns of every parameter the parameters cell does not list; the
    notebook's path (papermill's own ``--inject-input-path``) is one on purpose."""

    def filter(self, record) -> bool:
        return "PAPERMILL_INPUT_PATH" not in record.getMessage()


def execute(name: str, profile: str, root: Path = REPO_ROOT, parameters: dict | None = None,
            out_dir: Path | None = None) -> Path:
    """Run ``notebooks/NAME.ipynb`` with papermill at ``profile`` into the book folder
    (or ``out_dir``: a record's part), which is also its working directory."""
    import logging

    import papermill

    logging.getLogger("papermill").addFilter(QuietInputPath())
    source = root / "notebooks" / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"_toc.yml lists {EXECUTED_DIR / name} but {source} does not exist")
    out_dir = Path(out_dir or root / EXECUTED_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    # A verdict left by an earlier build must not stand in for this one if it fails.
    claims.verdict_path(out_dir, name).unlink(missing_ok=True)
    done = None
    try:
        papermill.execute_notebook(str(source), str(output), cwd=str(out_dir), kernel_name="python3",
                                   parameters={"profile": profile, **(parameters or {}),
                                               "PAPERMILL_INPUT_PATH": str(source)},
                                   kernel_manager_class=private_kernel_manager(),
                                   progress_bar={"desc": f"{name} (cells)", "unit": "cell", "leave": False})
        done = fingerprint(name, profile, root) if not parameters else None
    finally:  # a failed notebook is still rendered, with its error
        with contextlib.suppress(Exception):
            hide_injected_parameters(output, done)
    return output


def hide_injected_parameters(path: Path, fingerprint: str | None = None) -> None:
    """papermill's injected cell is for the machine; the chapter shows parameters itself.
    ``fingerprint`` (of a successful execution) is kept in the notebook's metadata."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    if fingerprint:
        nb.metadata["vqstudy"] = {"fingerprint": fingerprint}
    nbformat.write(nb, path)


def reads_records(name: str, root: Path = REPO_ROOT) -> bool:
    """Whether a chapter trains nothing (no ``sweep:`` in its profiles entry): such a
    chapter renders the committed records under ``records/``."""
    try:
        return "sweep" not in params.entry(name, root / "notebooks")
    except (ValueError, OSError):
        return False


def fingerprint(name: str, profile: str, root: Path = REPO_ROOT) -> str:
    """Everything an executed chapter depends on: its notebook, its profiles entry, the
    profile, all of vqstudy (the runs' code, and the figures' and checks'), and for a
    chapter that renders records (:func:`reads_records`) their run tables, verdicts and
    provenance. Equal fingerprints: executing it again would give the same chapter."""
    h = hashlib.sha256()
    notebooks = root / "notebooks"
    h.update((notebooks / f"{name}.ipynb").read_bytes())
    with contextlib.suppress(ValueError, OSError):  # a notebook without a profiles entry has no parameters
        h.update(json.dumps(params.entry(name, notebooks), sort_keys=True, default=str).encode())
    h.update(profile.encode())
    if reads_records(name, root):  # it renders the committed records: a new or changed part changes it
        for path in sorted((root / "records").glob("*/*/x*/*.json")):
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def up_to_date(name: str, profile: str, root: Path = REPO_ROOT) -> bool:
    """Whether ``book/claims/NAME.ipynb`` was executed successfully from exactly these
    sources (then neither its sweep nor its notebook needs to run again)."""
    import nbformat

    executed = root / EXECUTED_DIR / f"{name}.ipynb"
    if not executed.exists() or not claims.verdict_path(executed.parent, name).exists():
        return False
    try:
        recorded = nbformat.read(executed, as_version=4).metadata.get("vqstudy", {}).get("fingerprint")
    except Exception:
        return False
    return recorded == fingerprint(name, profile, root)


def build_html(root: Path = REPO_ROOT) -> int:
    """Render the book; Sphinx warnings are errors (a missing figure fails the build)."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(root), "--warningiserror", "--keep-going"]
    return subprocess.call(cmd, cwd=root)


def verdict_line(verdicts: list[dict] | None) -> str:
    if verdicts is None:
        return "no verdict recorded"
    shown = [v for v in verdicts if v["role"] != "superseded"]
    return "; ".join(f"{v['claim']} {'holds' if v['holds'] else 'DOES NOT HOLD'} "
                     f"({sum(c['holds'] for c in v['conditions'])}/{len(v['conditions'])})" for v in shown)


def error_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"FAILED: {exc.__class__.__name__}: {text.splitlines()[-1] if text else ''}"


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


LONG_CHAPTER = "longer_training"  # the chapter that renders the long-schedule records


def long_record(root: Path = REPO_ROOT) -> dict:
    """The newest long-schedule record under ``root/records`` for the scorecard: its
    verdicts at each chapter's longest finished schedule, judged with today's rules
    (:func:`vqstudy.recorded.longest_verdicts`), and the chapter that renders it; ``{}``
    without one."""
    from vqstudy import recorded

    found = recorded.longest_verdicts(root / "records")
    return {**found, "chapter": LONG_CHAPTER} if found else {}


def write_pages(root: Path = REPO_ROOT) -> Path:
    """The pages made from the recorded verdicts: scorecard, the introduction's summary,
    the rule log. Returns the scorecard's path."""
    folder = root / EXECUTED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    entries = [scorecard.Entry(name, claims.read(folder, name), (folder / f"{name}.ipynb").exists(), caption)
               for caption, files in toc_parts(root) for f in files if (name := chapter_name(f))]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (folder / SUMMARY).write_text(scorecard.summary(entries))
    (folder / "rule_log.md").write_text(scorecard.rule_log(entries, claims.RULE_CHANGES))
    path = folder / "scorecard.md"
    path.write_text(scorecard.page(entries, date, claims.RULE_CHANGES, long_record(root)))
    return path


def build_book(profile: str = "quick", only: list[str] | None = None, build: bool = True,
               root: Path = REPO_ROOT, scheduler: str | None = None) -> int:
    """Sweep and execute the toc's chapters (or ``only`` those), write the pages made
    from their verdicts, render. Ends with one line per chapter: wall time and verdicts."""
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
            if up_to_date(name, profile, root):
                summary.append(f"{name:<28} up to date    {verdict_line(claims.read(root / EXECUTED_DIR, name))}")
                print(f"== [{i}/{len(todo)}] {summary[-1]}", flush=True)
                continue
            print(f"== [{i}/{len(todo)}] {name} at profile {profile}: sweep", flush=True)
            swept = sweep(name, profile, root, scheduler)
            if swept == 130:
                raise KeyboardInterrupt
            swept_at = time.perf_counter()
            print(f"== [{i}/{len(todo)}] {name}: executing notebooks/{name}.ipynb", flush=True)
            try:
                execute(name, profile, root)
                status = verdict_line(claims.read(root / EXECUTED_DIR, name))
            except Exception as exc:  # report, keep the other chapters' results, go on
                failed.append(name)
                status = error_line(exc)
            if swept != 0:
                failed += [] if name in failed else [name]
                status += f" (the sweep exited {swept})"
            now = time.perf_counter()
            summary.append(f"{name:<28} {now - started:7.1f} s (sweep {swept_at - started:.1f} s, "
                           f"notebook {now - swept_at:.1f} s)   {status}")
            print(f"== {summary[-1]}", flush=True)
    except KeyboardInterrupt:
        print("\n== interrupted; finished so far:\n" + ("\n".join(summary) or "(none)"), file=sys.stderr)
        print("Training runs that completed are in the run cache; run the same command again to resume.",
              file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)

    page = write_pages(root)
    print(f"\n== summary ({profile}, {time.perf_counter() - book_started:.0f} s; scorecard: {page.relative_to(root)})")
    print("\n".join(summary))
    code = 0
    if failed:
        print(f"\n{len(failed)} chapter(s) failed: {failed}; executed copies with the error are in {EXECUTED_DIR}/",
              file=sys.stderr)
        code = 1
    if build:
        built = build_html(root)
        print(f"== HTML {'built' if built == 0 else 'build FAILED (Sphinx warnings are errors, see above)'}: "
              f"{root / '_build' / 'html' / 'index.html'}; "
              f"{time.perf_counter() - book_started:.0f} s in all", flush=True)
        code = built or code
    return code
