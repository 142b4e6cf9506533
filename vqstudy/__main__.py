"""Command line: ``python -m vqstudy {book,sweep,record,parameters,fetch-data,clean-runs} ...`` (``--help`` on each)."""

import argparse
import signal
import sys
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vqstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-data", help="obtain, verify and cache CIFAR-10 (no-op when cached)")
    fetch.add_argument("--cache-dir", default=None, help="cache folder (default: $VQSTUDY_DATA or ./data)")

    book = sub.add_parser("book", help="sweep then execute every chapter in _toc.yml, then build the book")
    book.add_argument("--profile", default="quick", help="smoke | quick | long | paper (default: quick)")
    book.add_argument("--only", nargs="*", default=None, help="sweep and execute only these chapters (by name)")
    book.add_argument("--no-build", action="store_true", help="execute the chapters but do not build the HTML")
    book.add_argument("--scheduler", default=None, help="train the runs on this Dask scheduler, tcp://HOST:PORT")

    sweep = sub.add_parser("sweep", help="train every run of a chapter into the run cache (e.g. on a Dask cluster)")
    sweep.add_argument("notebook", help="a chapter: its name (tokens_collapse) or notebook path")
    sweep.add_argument("--profile", default="quick", help="smoke | quick | long | paper (default: quick)")
    sweep.add_argument("--scheduler", default=None,
                       help="Dask scheduler address tcp://HOST:PORT (default: worker processes on this machine)")
    sweep.add_argument("--workers", type=int, default=None,
                       help="worker processes on this machine (default: $VQSTUDY_WORKERS, else one per core)")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="override a parameter, as papermill's -p (VALUE read as YAML: -p seed '[0, 1]')")

    rec = sub.add_parser("record", help="run the long schedules (or another profile) once into records/NAME/, "
                                        "part by part, resumable")
    rec.add_argument("name", help="the record's folder under records/, e.g. long-cpu-2026-12-07")
    rec.add_argument("--profile", default="long", help="the profile whose entries are recorded (default: long)")
    rec.add_argument("--schedule", type=int, nargs="+", default=[1, 4, 16],
                     help="multiples of the profile's total_steps and pretrain_steps (default: 1 4 16)")
    rec.add_argument("--only", nargs="*", default=None, help="only these chapters (by name)")
    rec.add_argument("--workers", type=int, default=None,
                     help="worker processes (default: $VQSTUDY_WORKERS, else one per core)")
    rec.add_argument("--root", default=None, help="folder of the records (default: records/ of this checkout)")
    rec.add_argument("--no-notebook", action="store_true", help="record the runs only, do not execute the notebooks")

    cell = sub.add_parser("parameters", help="print (or --write) a chapter's parameters cell from profiles.yml")
    cell.add_argument("notebook", help="a chapter: its name or notebook path")
    cell.add_argument("--write", action="store_true", help="replace the notebook's parameters cell")

    clean = sub.add_parser("clean-runs", help="delete every stored run from the run cache")
    clean.add_argument("--runs-dir", default=None, help="run cache folder (default: $VQSTUDY_RUNS or ./runs)")

    args = parser.parse_args(argv)
    if args.command == "fetch-data":
        from vqstudy import cifar10

        print(f"CIFAR-10 ready: {cifar10.fetch(cache_dir=args.cache_dir)}")
        return 0
    if args.command == "book":
        from vqstudy import runner

        return runner.build_book(profile=args.profile, only=args.only, build=not args.no_build,
                                 scheduler=args.scheduler)
    if args.command == "sweep":
        return sweep_command(args.notebook, args.profile, args.scheduler, args.workers, args.parameter)
    if args.command == "record":
        return record_command(args)
    if args.command == "parameters":
        return parameters_command(args.notebook, args.write)
    if args.command == "clean-runs":
        from vqstudy import runs

        print(f"removed {runs.clear(args.runs_dir)} files from the run cache")
        return 0
    return 2


def chapter(notebook: str) -> tuple[str, Path]:
    """``(name, notebooks folder)`` of a chapter given by name or by notebook path."""
    from vqstudy.params import REPO_ROOT

    path = Path(notebook)
    if path.suffix == ".ipynb":
        return path.stem, path.resolve().parent
    return notebook, REPO_ROOT / "notebooks"


def sweep_command(notebook: str, profile: str, scheduler: str | None, workers: int | None,
                  parameters: list) -> int:
    """Train a chapter's runs: afterwards executing its notebook trains nothing."""
    import yaml

    from vqstudy import runs, sweeps

    name, folder = chapter(notebook)
    try:
        plan = sweeps.plan(name, profile, {key: yaml.safe_load(v) for key, v in parameters}, notebooks=folder)
    except ValueError as exc:  # unknown notebook or parameter, wrong type, out of range: already says which
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configs = plan.configs
    cached = sum(runs.run_path(cfg).exists() for cfg in configs)
    where = scheduler or f"{workers or runs.default_workers()} worker process(es)"
    print(f"{name} at {profile}: {len(configs)} runs, {cached} in the cache; computing the rest on {where}",
          flush=True)
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, interrupt)  # stopped by `make book` or a scheduler: stop the workers too
    try:
        runs.run_all(configs, desc=name, scheduler=scheduler, workers=workers)
    except runs.SweepFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; finished runs are in the run cache {runs.cache_dir()}", file=sys.stderr)
        return 130
    print(f"{len(configs)} runs: {cached} from the cache, {len(configs) - cached} computed, "
          f"in {time.perf_counter() - started:.0f} s; run cache {runs.cache_dir()}", flush=True)
    return 0


def record_command(args) -> int:
    from vqstudy import records, runs

    signal.signal(signal.SIGTERM, interrupt)
    try:
        written = records.record(args.name, args.profile, args.schedule, args.only, args.workers, args.root,
                                 notebook=not args.no_notebook)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except runs.SweepFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nrecord {args.name}: interrupted; finished parts and each finished seed's runs are kept, "
              "and the same command resumes", file=sys.stderr)
        return 130
    print(f"record {args.name}: {len(written)} part(s) written: " + ", ".join(map(str, written)))
    return 0


def interrupt(signum, frame):
    raise KeyboardInterrupt


def parameters_command(notebook: str, write: bool) -> int:
    import nbformat

    from vqstudy import params

    name, folder = chapter(notebook)
    source = params.parameters_cell(name, folder)
    if not write:
        print(source)
        return 0
    path = folder / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        print(f"error: {path} has {len(cells)} cells tagged 'parameters'; expected one", file=sys.stderr)
        return 2
    cells[0].source = source
    nbformat.write(nb, path)
    print(f"wrote the parameters cell of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
