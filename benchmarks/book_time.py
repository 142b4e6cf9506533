"""Where the time of a cold `make book` goes, chapter by chapter, read from a run cache
that a cold build filled (each stored run keeps the seconds it trained for).

A run that several chapters share (the same configuration is one run) is counted once, at
the first chapter in book order that needs it: that is where a cold build trains it. A
chapter's sweep on W worker processes takes about its summed run seconds / W (each run is
one process on one torch thread). Notebook execution, the more-seeds runs a chapter
decides on while it executes (``more_seeds_seconds``) and the HTML build come on top: the
summary that ``python -m vqstudy book`` prints at its end has them.

Use it to see which runs cost what before cutting any, and to price a change of
``notebooks/profiles.yml`` without training: configurations missing from the cache are
counted and listed by kind, not timed.

    .venv/bin/python benchmarks/book_time.py RUN_CACHE [--profile quick] [--workers 2]

Not a test: the seconds are those of the machine and load the cache was filled on.
"""

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vqstudy import runner, runs, sweeps  # noqa: E402


def chapter_costs(cache: Path, profile: str) -> list[dict]:
    """Per chapter in book order: runs, runs first needed here, their summed seconds, and
    the kinds (data, K, regime, quantizer, steps) of those missing from ``cache``."""
    seen, rows = set(), []
    for name in runner.executed_notebooks():
        plan = sweeps.plan(name, profile)
        new = seconds = 0
        missing = collections.Counter()
        by_kind = collections.Counter()
        for cfg in plan.configs:
            key = runs.run_key(cfg)
            if key in seen:
                continue
            seen.add(key)
            new += 1
            kind = (cfg.data, cfg.codebook_size, cfg.regime, cfg.quantizer, cfg.total_steps)
            path = cache / f"{key}.pt"
            result = runs.load_run(path) if path.exists() else None
            if result is None:
                missing[kind] += 1
            else:
                seconds += result["seconds"]
                by_kind[cfg.data] += result["seconds"]
        rows.append({"chapter": name, "runs": len(plan.configs), "new": new, "seconds": seconds,
                     "cifar10_seconds": by_kind["cifar10"], "missing": missing})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="a run cache filled by a cold build (its runs/ folder)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = chapter_costs(args.cache, args.profile)
    print(f"| chapter | runs | trained here | run seconds | of them CIFAR-10 | sweep on {args.workers} workers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['chapter']} | {r['runs']} | {r['new']} | {r['seconds']:.0f} | {r['cifar10_seconds']:.0f} | "
              f"{r['seconds'] / args.workers / 60:.1f} min |")
    total = sum(r["seconds"] for r in rows)
    print(f"| **all** | {sum(r['runs'] for r in rows)} | {sum(r['new'] for r in rows)} | {total:.0f} | "
          f"{sum(r['cifar10_seconds'] for r in rows):.0f} | {total / args.workers / 60:.1f} min |")
    for r in rows:
        for kind, n in r["missing"].items():
            print(f"not in the cache ({r['chapter']}): {n} x data={kind[0]} K={kind[1]} {kind[2]} {kind[3]} "
                  f"{kind[4]} steps")


if __name__ == "__main__":
    main()
