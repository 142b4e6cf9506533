"""Command line: ``python -m vqstudy {book,fetch-data,sweep,clean-runs} ...`` (``--help`` on each)."""

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vqstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-data", help="obtain, verify and cache CIFAR-10 (no-op when cached)")
    fetch.add_argument("--cache-dir", default=None, help="cache folder (default: $VQSTUDY_DATA or ./data)")

    book = sub.add_parser("book", help="execute every notebook in _toc.yml with papermill, then build the book")
    book.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    book.add_argument("--only", nargs="*", default=None, help="execute only these notebooks (by name)")
    book.add_argument("--no-build", action="store_true", help="execute notebooks but do not build the HTML")
    book.add_argument("--scheduler", default=None,
                      help="train missing runs on this Dask scheduler, tcp://HOST:PORT (default: $VQSTUDY_SCHEDULER)")

    sweep = sub.add_parser("sweep", help="compute every run of a notebook into the run cache (e.g. on a Dask cluster)")
    sweep.add_argument("notebook", help="notebook name, e.g. tokens_collapse")
    sweep.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    sweep.add_argument("--scheduler", default=None,
                       help="Dask scheduler address tcp://HOST:PORT (default: $VQSTUDY_SCHEDULER; unset: this process)")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="override a notebook parameter, as papermill's -p (VALUE read as YAML: -p seeds '[0, 1]')")

    clean = sub.add_parser("clean-runs", help="delete every stored run from the run cache")
    clean.add_argument("--runs-dir", default=None, help="run cache folder (default: $VQSTUDY_RUNS or ./runs)")

    args = parser.parse_args(argv)
    if args.command == "fetch-data":
        from vqstudy import cifar10

        path = cifar10.fetch(cache_dir=args.cache_dir)
        print(f"CIFAR-10 ready: {path}")
        return 0
    if args.command == "book":
        from vqstudy import runner

        if args.scheduler:  # the notebooks' kernels inherit it; runs.run_all reads it
            os.environ["VQSTUDY_SCHEDULER"] = args.scheduler
        return runner.build_book(profile=args.profile, only=args.only, build=not args.no_build)
    if args.command == "sweep":
        return sweep_command(args.notebook, args.profile, args.scheduler, args.parameter)
    if args.command == "clean-runs":
        from vqstudy import runs

        print(f"removed {runs.clear(args.runs_dir)} files from the run cache")
        return 0
    return 2


def sweep_command(notebook: str, profile: str, scheduler: str | None, parameters: list) -> int:
    """Precompute a notebook's runs: afterwards executing it trains nothing."""
    import time

    import yaml

    from vqstudy import experiments, runs

    try:
        configs = experiments.configs_for(notebook, profile, {name: yaml.safe_load(v) for name, v in parameters})
    except ValueError as exc:  # unknown notebook or parameter, wrong type, out of range: already says which
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cached = sum(runs.run_path(cfg).exists() for cfg in configs)
    where = scheduler or os.environ.get(runs.SCHEDULER_ENV) or "this process"
    print(f"{notebook} at {profile}: {len(configs)} runs, {cached} in the cache; computing the rest on {where}")
    started = time.perf_counter()
    try:
        runs.run_all(configs, desc=notebook, scheduler=scheduler)
    except runs.SweepFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{len(configs)} runs: {cached} from the cache, {len(configs) - cached} computed, "
          f"in {time.perf_counter() - started:.0f} s; run cache {runs.cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
