"""``python -m bench.compare A B [C ...]``: line runs up cell by cell.

- Two runs get a verdict per cell (faster / slower / same / inconclusive / broken /
  fixed); more runs get one table with a column per run and the change against the
  first, then each run's verdicts against the first. Runs on different hardware,
  or without a hardware fingerprint, are refused (the reason named) unless
  ``--force``. ``--fail-on-regression`` is the gate (bench.analyze.gate).
- ``--power``: the verdict's error rates and power, by seeded simulation
  (bench.analyze.power); no runs needed.
- ``--across``: runs from different machines side by side, no verdict and nothing
  refused: per cell each machine's figures and the ratio to a reference machine,
  the fastest machine per accelerator, a bar chart (with ``--out``).

    python -m bench.compare results/A results/B [results/C ...] [--threshold 5]
                            [--force] [--fail-on-regression [--strict]
                            [--accuracy-threshold 1] [--allow-missing]]
                            [--fail-on-missing] [--markdown] [--out FOLDER]
    python -m bench.compare --across results/reference/* my-run [--reference A]
    python -m bench.compare --power [--threshold 5] [--markdown]

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
    BROKEN,
    FIXED,
    LEGEND,
    compare_runs,
    describe,
    display_table,
    side_by_side,
)
from bench.analyze.gate import MISSING, GateOptions, failures
from bench.analyze.identity import env_mismatch
from bench.analyze.load import load_records, records_path
from bench.analyze.noise import FASTER, INCONCLUSIVE, SAME, SLOWER
from bench.analyze.pages import Section, html_page, markdown_page
from bench.analyze.tables import render, short_reason


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description="Compare benchmark runs against the first.")
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="run directories or records.jsonl files; the first is the "
                             "reference (at least two, at most 26)")
    parser.add_argument("--threshold", type=float, default=5.0,
                        help="smallest throughput change in percent worth calling faster or "
                             "slower, and the band of 'same' (default 5)")
    parser.add_argument("--force", action="store_true",
                        help="compare different hardware, or runs without a fingerprint")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when a cell is slower, broken or partly broken, its "
                             "accuracy dropped or collapsed, or a cell of the first run is "
                             "missing from another")
    parser.add_argument("--strict", action="store_true",
                        help="with --fail-on-regression: also fail an inconclusive change "
                             "below -threshold")
    parser.add_argument("--accuracy-threshold", type=float, default=1.0, metavar="POINTS",
                        help="largest drop of val_acc / test_acc on accuracy cells, in "
                             "percentage points (default 1)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --fail-on-regression: a cell missing from a run is "
                             "reported, not failed")
    parser.add_argument("--fail-on-missing", action="store_true",
                        help="exit 1 when a cell of the first run has no record in another "
                             "(what --fail-on-regression does unless --allow-missing)")
    parser.add_argument("--power", action="store_true",
                        help="print the verdict's error rates and power (seeded simulation) "
                             "and exit")
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
    for name in ("threshold", "accuracy_threshold"):
        if getattr(args, name) < 0:
            print(f"error: --{name.replace('_', '-')} must be >= 0, got "
                  f"{getattr(args, name):g}", file=sys.stderr)
            return 2
    if args.power:
        return power(args)
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
        found = env_mismatch(frames[0], df, name)
        if found.refusals and not args.force:
            print(f"error: A and {name} cannot be compared: {'; '.join(found.refusals)}; "
                  "rerun with --force to compare anyway, or with --across to line the "
                  "machines up without a verdict", file=sys.stderr)
            return 2
        for note in [*(f"compared anyway (--force): {r}" for r in found.refusals),
                     *(f"different versions: {v}" for v in found.versions), *found.notes]:
            page.line(f"WARNING A vs {name}: {note}")
    print()
    if len(frames) > 2:
        page.table("Side by side", side_by_side(list(zip(names, frames, strict=True))))
    failed = False
    for name, df in zip(names[1:], frames[1:], strict=True):
        result = compare_runs(frames[0], df, args.threshold, args.accuracy_threshold)
        failed |= report_pair(result, name, args, page, table=len(frames) == 2)
    page.write(args.out, "compare", f"mnist-bench: {' vs '.join(names)}", [])
    return 1 if failed else 0


def report_pair(result: pd.DataFrame, name: str, args: argparse.Namespace, page: Page,
                table: bool) -> bool:
    """Print the verdicts of A against run ``name`` (their table too, for two runs);
    True when a requested failure applies."""
    if table:
        page.table(f"{name} against A", display_table(result), LEGEND)
    elif page.sections:  # the verdicts' lines go under a heading of their own
        page.sections.append(Section(f"{name} against A", pd.DataFrame(), ""))
    for where, label in (("A only", f"A only (not in {name})"), ("B only", f"{name} only")):
        only = result.loc[result["present"] == where, "cell_id"]
        if len(only):
            page.line(f"cells in {label}: {', '.join(only)}")
    counts = result["verdict"].value_counts()
    page.line(f"{name} vs A: " + ", ".join(
        f"{counts.get(v, 0)} {v}" for v in (FASTER, SLOWER, SAME, INCONCLUSIVE, BROKEN, FIXED))
        + f" (threshold {args.threshold:g}%; the repeats decide: see python -m bench.compare "
          "--power for the error rates)")
    for row in result[result["verdict"] == INCONCLUSIVE].to_dict("records"):
        page.line(f"inconclusive in {name}: {row['cell_id']} {row['change_pct']:+.1f}% "
                  f"({row['basis']})")
    for row in result[result["verdict"] == BROKEN].to_dict("records"):
        page.line(f"broken in {name}: {row['cell_id']} ({row['basis']}): "
                  f"{short_reason(row.get('reason'))}")
    for row in result[result["alarms"].astype(bool)].to_dict("records"):
        page.line(f"alarm in {name}: {row['cell_id']}: {row['alarms']}")
    gate = GateOptions(args.threshold, allow_missing=args.allow_missing, strict=args.strict)
    found = failures(result, gate) if args.fail_on_regression else []
    if args.fail_on_missing and not args.fail_on_regression:
        found = [(cell, MISSING) for cell in result.loc[result["present"] == "A only", "cell_id"]]
    for cell, why in found:
        print(f"missing in {name}: {cell}" if why == MISSING
              else f"regression in {name}: {cell}: {why}", file=sys.stderr)
    return bool(found)


def power(args: argparse.Namespace) -> int:
    """The table of bench.analyze.power at this threshold."""
    from bench.analyze.power import COMPARISONS, power_table

    table = power_table(args.threshold / 100)
    shown = table.assign(**{column: table[column].map(lambda v: f"{100 * v:.1f}%")
                            for column in table.columns[3:]})
    page = Page(args.markdown)
    page.table(f"Error rates and power at threshold {args.threshold:g}% ({COMPARISONS} "
               "simulated comparisons per row, seed 0)", shown, POWER_LEGEND)
    return 0


POWER_LEGEND = (
    "noise: the spread of a repeat's throughput between processes (coefficient of "
    "variation); tail: log-normal, or heavy (Student t with 3 degrees of freedom on the "
    "log scale); repeats: per side; inside each repeat, 30 steps with 5% spread and "
    "autocorrelation 0.65",
    "false faster/slower: called either with no true change; same at 0%: a true zero "
    "called same; slower at -X%: a true slowdown of X% found; Welch+threshold: the "
    "reference rule (Welch's t-test on the throughputs significant and the change "
    "beyond the threshold) on the same simulated runs",
)


if __name__ == "__main__":
    sys.exit(main())
