"""``python -m bench.report results/<run-id>``: write the tables, plots and report of
a run from its records (bench.analyze.report does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analyze.load import records_path
from bench.analyze.report import write_report
from bench.analyze.tables import LEGEND


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description="Write the tables, plots and report of a run.")
    parser.add_argument("run_dir", help="results/<run-id> (holding records.jsonl)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.run_dir)
    if not records_path(path).is_file():
        what = "directory" if not path.exists() else "records.jsonl"
        print(f"error: no {what} at {records_path(path) if path.is_dir() else path}",
              file=sys.stderr)
        return 2
    print(write_report(path))
    print(*LEGEND, sep="\n")
    run_dir = path if path.is_dir() else path.parent
    print(f"report: {run_dir / 'report.md'}  (html: report.html, plots: plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
