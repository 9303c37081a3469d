"""``python -m bench.compare A B [C ...]``: line runs up cell by cell. Two runs get
a verdict per cell (faster / slower / within noise / broken / fixed); more runs get
one table with a column per run and the change against the first (bench.analyze.
compare does the work).

    python -m bench.compare results/A results/B [results/C ...] [--threshold 5]
                            [--force] [--fail-on-regression] [--fail-on-missing]
                            [--markdown]
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import pandas as pd

from bench.analyze.compare import (
    ALPHA,
    BROKEN,
    FIXED,
    compare_runs,
    describe,
    display_table,
    env_mismatch,
    side_by_side,
)
from bench.analyze.load import load_records, records_path
from bench.analyze.tables import render, short_reason


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description="Compare benchmark runs against the first.")
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directories or records.jsonl files; the first is the "
                             "reference (at least two, at most 26)")
    parser.add_argument("--threshold", type=float, default=5.0,
                        help="minimum throughput change in percent to call (default 5)")
    parser.add_argument("--force", action="store_true", help="compare different hardware")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any cell is slower beyond the threshold, or "
                             "measured in the first run but failed (or timed out) in another")
    parser.add_argument("--fail-on-missing", action="store_true",
                        help="exit 1 when a cell of the first run has no record in another")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 2 <= len(args.runs) <= len(string.ascii_uppercase):
        print(f"error: give 2 to 26 runs, got {len(args.runs)}", file=sys.stderr)
        return 2
    for path in args.runs:
        if not records_path(path).is_file():
            print(f"error: no records.jsonl at {records_path(path)}", file=sys.stderr)
            return 2
    names = string.ascii_uppercase[:len(args.runs)]
    frames = [load_records(path) for path in args.runs]
    bullet = "- " if args.markdown else ""
    for name, path, df in zip(names, args.runs, frames, strict=True):
        print(f"{bullet}{name}: {Path(path)} ({describe(df)})")
    for name, df in zip(names[1:], frames[1:], strict=True):
        hardware, versions = env_mismatch(frames[0], df)
        if hardware and not args.force:
            print(f"error: A and {name} are on different hardware ({'; '.join(hardware)}); "
                  "rerun with --force to compare anyway", file=sys.stderr)
            return 2
        for note in [*(f"different hardware (forced): {h}" for h in hardware),
                     *(f"different versions: {v}" for v in versions)]:
            print(f"{bullet}WARNING A vs {name}: {note}")
    print()
    if len(frames) > 2:
        print(render(side_by_side(list(zip(names, frames, strict=True))),
                     markdown=args.markdown))
        print()
    failed = False
    for name, df in zip(names[1:], frames[1:], strict=True):
        result = compare_runs(frames[0], df, args.threshold)
        failed |= report_pair(result, name, args, bullet, table=len(frames) == 2)
    return 1 if failed else 0


def report_pair(result: pd.DataFrame, name: str, args: argparse.Namespace, bullet: str,
                table: bool) -> bool:
    """Print the verdicts of A against run ``name`` (their table too, for two runs);
    True when a requested failure applies."""
    if table:
        print(render(display_table(result), markdown=args.markdown))
        print()
    for where, label in (("A only", f"A only (not in {name})"), ("B only", f"{name} only")):
        only = result.loc[result["present"] == where, "cell_id"]
        if len(only):
            print(f"{bullet}cells in {label}: {', '.join(only)}")
    counts = result["verdict"].value_counts()
    print(f"{bullet}{name} vs A: " + ", ".join(
        f"{counts.get(v, 0)} {v}" for v in ("faster", "slower", "within noise", BROKEN, FIXED))
        + f" (threshold {args.threshold:g}%, Welch t-test p<{ALPHA} with >=2 repeats each)")
    broken = result[result["verdict"] == BROKEN]
    for row in broken.to_dict("records"):
        print(f"{bullet}broken in {name}: {row['cell_id']} ({row['basis']}): "
              f"{short_reason(row.get('reason'))}")
    slower = result.loc[result["verdict"] == "slower", "cell_id"]
    missing = result.loc[result["present"] == "A only", "cell_id"]
    failed = False
    if args.fail_on_regression and (len(slower) or len(broken)):
        print(f"regression in {name}: {', '.join([*slower, *broken['cell_id']])}",
              file=sys.stderr)
        failed = True
    if args.fail_on_missing and len(missing):
        print(f"missing in {name}: {', '.join(missing)}", file=sys.stderr)
        failed = True
    return failed


if __name__ == "__main__":
    sys.exit(main())
