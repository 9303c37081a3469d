"""``python -m bench.compare A B``: line two runs up cell by cell and say faster /
slower / within noise (bench.analyze.compare does the work).

    python -m bench.compare results/A results/B [--threshold 5] [--force]
                            [--fail-on-regression] [--fail-on-missing] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analyze.compare import (
    ALPHA,
    BROKEN,
    FIXED,
    compare_runs,
    describe,
    display_table,
    env_mismatch,
)
from bench.analyze.load import load_records, records_path
from bench.analyze.tables import render, short_reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description="Compare benchmark run B against run A.")
    parser.add_argument("a", help="run directory or records.jsonl (the reference)")
    parser.add_argument("b", help="run directory or records.jsonl (the candidate)")
    parser.add_argument("--threshold", type=float, default=5.0,
                        help="minimum throughput change in percent to call (default 5)")
    parser.add_argument("--force", action="store_true", help="compare different hardware")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any cell is slower beyond the threshold, or "
                             "measured in A but failed (or timed out) in B")
    parser.add_argument("--fail-on-missing", action="store_true",
                        help="exit 1 when a cell of A has no record in B")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not records_path(path).is_file():
            print(f"error: no records.jsonl at {records_path(path)}", file=sys.stderr)
            return 2
    a, b = load_records(args.a), load_records(args.b)
    hardware, versions = env_mismatch(a, b)
    if hardware and not args.force:
        print(f"error: runs are on different hardware ({'; '.join(hardware)}); "
              "rerun with --force to compare anyway", file=sys.stderr)
        return 2
    result = compare_runs(a, b, args.threshold)
    bullet = "- " if args.markdown else ""
    for name, path, df in (("A", args.a, a), ("B", args.b, b)):
        print(f"{bullet}{name}: {Path(path)} ({describe(df)})")
    for note in [*(f"different hardware (forced): {h}" for h in hardware),
                 *(f"different versions: {v}" for v in versions)]:
        print(f"{bullet}WARNING {note}")
    print()
    print(render(display_table(result), markdown=args.markdown))
    print()
    for where in ("A only", "B only"):
        only = result.loc[result["present"] == where, "cell_id"]
        if len(only):
            print(f"{bullet}cells in {where}: {', '.join(only)}")
    counts = result["verdict"].value_counts()
    print(f"{bullet}" + ", ".join(f"{counts.get(v, 0)} {v}"
                                  for v in ("faster", "slower", "within noise", BROKEN, FIXED))
          + f" (threshold {args.threshold:g}%, Welch t-test p<{ALPHA} with >=2 repeats each)")
    broken = result[result["verdict"] == BROKEN]
    for row in broken.to_dict("records"):
        print(f"{bullet}broken in B: {row['cell_id']} ({row['basis']}): "
              f"{short_reason(row.get('reason'))}")
    slower = result.loc[result["verdict"] == "slower", "cell_id"]
    missing = result.loc[result["present"] == "A only", "cell_id"]
    failed = False
    if args.fail_on_regression and (len(slower) or len(broken)):
        print(f"regression: {', '.join([*slower, *broken['cell_id']])}", file=sys.stderr)
        failed = True
    if args.fail_on_missing and len(missing):
        print(f"missing in B: {', '.join(missing)}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
