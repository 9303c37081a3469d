"""``python -m bench.compare A B [C ...]``: line runs up cell by cell.

- Two runs get a verdict per cell (faster / slower / within noise / inconclusive /
  broken / fixed); more runs get one table with a column per run and the change
  against the first, then each run's verdicts against the first. Runs on different
  hardware are refused (the difference named) unless ``--force``.
- ``--across``: runs from different machines side by side, no verdict and nothing
  refused: per cell each machine's figures and the ratio to a reference machine,
  the fastest machine per accelerator, a bar chart (with ``--out``).

    python -m bench.compare results/A results/B [results/C ...] [--threshold 5]
                            [--force] [--fail-on-regression] [--fail-on-missing]
                            [--markdown] [--out FOLDER]
    python -m bench.compare --across results/reference/* my-run [--reference A]

``--out FOLDER`` writes the same tables as compare.md / compare.html (across.md /
across.html and the plot for ``--across``). bench.analyze.compare and
bench.analyze.across do the work.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import pandas as pd

from bench.analyze.across import LEGEND as ACROSS_LEGEND
from bench.analyze.across import (
    across_table,
    differences,
    fastest_across,
    load_machines,
    machines_table,
)
from bench.analyze.compare import (
    ALPHA,
    BROKEN,
    FIXED,
    INCONCLUSIVE,
    compare_runs,
    describe,
    display_table,
    side_by_side,
)
from bench.analyze.identity import env_mismatch
from bench.analyze.load import load_records, records_path
from bench.analyze.pages import Section, html_page, markdown_page
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
    parser.add_argument("--across", action="store_true",
                        help="runs from different machines side by side: no verdict, "
                             "nothing refused")
    parser.add_argument("--reference", default="A", metavar="KEY|LABEL",
                        help="--across: the machine the ratios are against (default A, "
                             "the first run)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--out", type=Path, default=None, metavar="FOLDER",
                        help="also write the tables as markdown and HTML pages there")
    return parser


class Page:
    """What the command prints, kept as sections for ``--out``'s markdown and HTML."""

    def __init__(self, markdown: bool) -> None:
        self.markdown, self.bullet = markdown, "- " if markdown else ""
        self.header: list[tuple[str, str]] = []
        self.sections: list[Section] = []

    def line(self, text: str) -> None:
        print(f"{self.bullet}{text}")
        if self.sections:
            self.sections[-1].notes.append(text)
        else:
            label, _, value = text.partition(": ")
            self.header.append((label, value))

    def table(self, title: str, table: pd.DataFrame, notes: list[str] | tuple = ()) -> None:
        print(f"{title}:\n{render(table, markdown=self.markdown)}")
        self.sections.append(Section(title, table, "No rows."))
        for note in notes:
            self.line(note)
        print()

    def write(self, out: Path | None, name: str, title: str, pngs: list[Path]) -> None:
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(markdown_page(title, self.header, self.sections,
                                                      pngs, plots_dir="."))
        (out / f"{name}.html").write_text(html_page(title, self.header, self.sections, pngs))
        print(f"written: {out / f'{name}.md'}, {out / f'{name}.html'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 2 <= len(args.runs) <= len(string.ascii_uppercase):
        print(f"error: give 2 to 26 runs, got {len(args.runs)}", file=sys.stderr)
        return 2
    for path in args.runs:
        if not records_path(path).is_file():
            print(f"error: no records.jsonl at {records_path(path)}", file=sys.stderr)
            return 2
    return across(args) if args.across else compare(args)


def across(args: argparse.Namespace) -> int:
    machines = load_machines(args.runs)
    try:
        table = across_table(machines, args.reference)
    except ValueError as error:
        print(f"error: --reference: {error}", file=sys.stderr)
        return 2
    page = Page(args.markdown)
    page.table("Machines", machines_table(machines), differences(machines))
    page.table("Per cell", table, ACROSS_LEGEND)
    page.table("Fastest per accelerator", fastest_across(machines))
    pngs: list[Path] = []
    if args.out is not None:
        from bench.analyze.across_plot import plot_across  # matplotlib: files only

        pngs = [p for p in [plot_across(machines, args.out)] if p is not None]
    page.write(args.out, "across", "mnist-bench: across machines", pngs)
    return 0


def compare(args: argparse.Namespace) -> int:
    names = string.ascii_uppercase[:len(args.runs)]
    frames = [load_records(path) for path in args.runs]
    page = Page(args.markdown)
    for name, path, df in zip(names, args.runs, frames, strict=True):
        page.line(f"{name}: {Path(path)} ({describe(df)})")
    for name, df in zip(names[1:], frames[1:], strict=True):
        hardware, versions, unchecked = env_mismatch(frames[0], df, name)
        if hardware and not args.force:
            print(f"error: A and {name} are on different hardware ({'; '.join(hardware)}); "
                  "rerun with --force to compare anyway, or with --across to line the "
                  "machines up without a verdict", file=sys.stderr)
            return 2
        for note in [*(f"different hardware (forced): {h}" for h in hardware),
                     *(f"different versions: {v}" for v in versions), *unchecked]:
            page.line(f"WARNING A vs {name}: {note}")
    print()
    if len(frames) > 2:
        page.table("Side by side", side_by_side(list(zip(names, frames, strict=True))))
    failed = False
    for name, df in zip(names[1:], frames[1:], strict=True):
        result = compare_runs(frames[0], df, args.threshold)
        failed |= report_pair(result, name, args, page, table=len(frames) == 2)
    page.write(args.out, "compare", f"mnist-bench: {' vs '.join(names)}", [])
    return 1 if failed else 0


def report_pair(result: pd.DataFrame, name: str, args: argparse.Namespace, page: Page,
                table: bool) -> bool:
    """Print the verdicts of A against run ``name`` (their table too, for two runs);
    True when a requested failure applies."""
    if table:
        page.table(f"{name} against A", display_table(result))
    elif page.sections:  # the verdicts' lines go under a heading of their own
        page.sections.append(Section(f"{name} against A", pd.DataFrame(), ""))
    for where, label in (("A only", f"A only (not in {name})"), ("B only", f"{name} only")):
        only = result.loc[result["present"] == where, "cell_id"]
        if len(only):
            page.line(f"cells in {label}: {', '.join(only)}")
    counts = result["verdict"].value_counts()
    page.line(f"{name} vs A: " + ", ".join(
        f"{counts.get(v, 0)} {v}"
        for v in ("faster", "slower", "within noise", INCONCLUSIVE, BROKEN, FIXED))
        + f" (threshold {args.threshold:g}%; repeats: Welch t-test p<{ALPHA}; too few "
          "repeats: per-step block bootstrap)")
    for row in result[result["verdict"] == INCONCLUSIVE].to_dict("records"):
        page.line(f"inconclusive in {name}: {row['cell_id']} {row['change_pct']:+.1f}% "
                  f"({row['basis']})")
    broken = result[result["verdict"] == BROKEN]
    for row in broken.to_dict("records"):
        page.line(f"broken in {name}: {row['cell_id']} ({row['basis']}): "
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
