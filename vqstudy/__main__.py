"""Command line: ``python -m vqstudy {book,fetch-data} ...`` (``--help`` on each)."""

import argparse
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

    args = parser.parse_args(argv)
    if args.command == "fetch-data":
        from vqstudy import cifar10

        path = cifar10.fetch(cache_dir=args.cache_dir)
        print(f"CIFAR-10 ready: {path}")
        return 0
    if args.command == "book":
        from vqstudy import runner

        return runner.build_book(profile=args.profile, only=args.only, build=not args.no_build)
    return 2


if __name__ == "__main__":
    sys.exit(main())
