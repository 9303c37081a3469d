"""``python -m bench.history DIR [DIR ...]``: throughput over many runs. Every run
found under the directories (any folder holding records.jsonl), oldest first, one
column per run, the runs where a cell's throughput changed for good, and each
cell's runs against a baseline (the rule and its error rates: bench.analyze.series;
the tables: bench.analyze.history).

    python -m bench.history results/ [--cells SUBSTRING] [--threshold 5] [--markdown]
                            [--baseline RUN] [--out FOLDER] [--fail-on-change]

Exit codes: 0 ok (fewer than two runs included: nothing to compare; with
--fail-on-change, no confirmed slowdown), 1 with --fail-on-change when a cell has a
confirmed slowdown (a change point the next run confirms, or its last two runs
below the baseline's band; an unconfirmed last run is printed, not failed), 2 on
bad input (an unknown --baseline included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench.analyze.compare import describe
from bench.analyze.history import (
    LEGEND,
    HistoryError,
    Run,
    baseline_table,
    cell_history,
    changes_table,
    load_runs,
    trend_table,
)
from bench.analyze.pages import Section, html_page, markdown_page
from bench.analyze.tables import render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.history",
                                     description="Throughput of every cell over many runs, "
                                                 "with the runs where it changed.")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="directories searched (recursively) for runs: folders holding "
                             "records.jsonl")
    parser.add_argument("--cells", metavar="SUBSTRING",
                        help="only the cells whose id contains SUBSTRING")
    parser.add_argument("--threshold", type=float, default=5.0,
                        help="smallest throughput change in percent to call (default 5); "
                             "noisier cells need more (their noise between runs sets the band)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--baseline", metavar="RUN",
                        help="the run each cell's later runs are compared with (with the next "
                             "two, the median of 3 runs): an index in the list (0 = oldest, "
                             "-1 = newest), a label, a path, or a piece of one label (a sha); "
                             "default the first run")
    parser.add_argument("--out", metavar="FOLDER",
                        help="write history.md, history.html and a PNG per cell there")
    parser.add_argument("--fail-on-change", action="store_true",
                        help="exit 1 on a confirmed slowdown: a change point the next run "
                             "confirms, or the last two runs below the baseline's band")
    return parser


def runs_table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([{"run": run.label, "path": str(run.path), "machine": describe(run.records),
                          "started": f"{run.started:%Y-%m-%d %H:%M:%S %Z}".strip(),
                          "time from": run.time_source} for run in runs],
                        columns=["run", "path", "machine", "started", "time from"])


def machines(runs: list[Run]) -> list[str]:
    """The distinct 'host, device' the runs ran on, from their records: a change
    between machines is not a change of the code."""
    found: dict[str, None] = {}
    for run in runs:
        names = ("/".join(sorted(set(run.records.get(f"env_{key}", pd.Series(dtype=str))
                                     .dropna().astype(str)))) or "?"
                 for key in ("hostname", "device"))
        found[", ".join(names)] = None
    return list(found)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threshold < 0:
        print(f"error: --threshold must be >= 0, got {args.threshold:g}", file=sys.stderr)
        return 2
    try:
        runs = load_runs(args.dirs)
        baseline = baseline_index(runs, args.baseline)
    except HistoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    bullet = "- " if args.markdown else ""
    print(f"{len(runs)} run{'s' * (len(runs) != 1)}, oldest first:")
    for run in runs:
        when = "" if run.time_source == "env.json" else f" [time from {run.time_source}]"
        print(f"{bullet}{run.label}: {run.path} ({describe(run.records)}){when}")
    if len(runs) < 2:
        print("Nothing to compare: a history needs at least two runs.")
        return 0
    if len(found := machines(runs)) > 1:
        print(f"{bullet}WARNING: the runs ran on {len(found)} machines ({'; '.join(found)}): "
              "a change can be the machine's")
    threshold = args.threshold / 100
    history = cell_history(runs, args.cells, threshold, baseline)
    if history.empty:
        print(f"error: no cell id contains {args.cells!r}" if args.cells
              else "error: the runs hold no records", file=sys.stderr)
        return 2
    print()
    sections = [Section("Runs", runs_table(runs), "No runs."),
                Section("Throughput per run (samples/s)", trend_table(history, runs),
                        "No cell to show.", list(LEGEND)),
                Section("Change points", changes_table(history, runs),
                        f"No change point (threshold {args.threshold:g}%)."),
                Section(f"Against the baseline ({runs[baseline].label})",
                        baseline_table(history, runs), "No cell to compare.")]
    for section in sections[1:]:
        print(f"{section.title}:")
        print(render(section.table, markdown=args.markdown) if len(section.table)
              else section.empty)
        for note in section.notes:
            print(f"{bullet}{note}")
        print()
    if args.out:
        write_pages(Path(args.out), args, runs, history, sections)
    return 1 if args.fail_on_change and report_slowdowns(history, runs) else 0


def write_pages(out: Path, args: argparse.Namespace, runs: list[Run], history: pd.DataFrame,
                sections: list[Section]) -> None:
    """history.md (the PNGs beside it), history.html (the PNGs inlined)."""
    from bench.analyze.history_plot import plot_history  # matplotlib: files only

    out.mkdir(parents=True, exist_ok=True)
    pngs = plot_history(history, runs, out)
    title = "mnist-bench history"
    env = [("directories", ", ".join(args.dirs)),
           ("runs", f"{len(runs)}, {runs[0].label} to {runs[-1].label}"),
           ("cells", f"id contains {args.cells!r}" if args.cells else "all"),
           ("threshold", f"{args.threshold:g}%"),
           ("baseline", runs[baseline_index(runs, args.baseline)].label)]
    (out / "history.md").write_text(markdown_page(title, env, sections, pngs, plots_dir="."))
    (out / "history.html").write_text(html_page(title, env, sections, pngs))
    print(f"history: {out / 'history.md'}  (html: history.html, {len(pngs)} plot(s))")


def baseline_index(runs: list[Run], spec: str | None) -> int:
    """The run ``spec`` names: an index into ``runs`` (0 = oldest, -1 = newest), its
    label, its folder (or records.jsonl), or a piece of one label only (a sha)."""
    if spec is None:
        return 0
    try:
        index = int(spec)
    except ValueError:
        pass
    else:
        if -len(runs) <= index < len(runs):
            return index % len(runs)
        raise HistoryError(f"--baseline {index}: there are {len(runs)} runs (0 to {len(runs) - 1})")
    path = Path(spec)
    path = path.parent if path.name == "records.jsonl" else path
    for i, run in enumerate(runs):
        if spec == run.label or (path.exists() and path.resolve() == run.path.resolve()):
            return i
    found = [i for i, run in enumerate(runs) if spec in run.label]
    if len(found) == 1:
        return found[0]
    raise HistoryError(f"--baseline {spec!r} names {len(found) or 'no'} runs: give an index, "
                       "a label, a path, or a piece of one label only")


def report_slowdowns(history: pd.DataFrame, runs: list[Run]) -> bool:
    """Print every slowdown to stderr, confirmed (failing) or not yet (not failing):
    change points, and a cell's last run below its baseline's band; True when one
    fails the gate."""
    failed = False
    for _, group in history[history["n"] > 0].groupby("cell_id", sort=False):
        found = [("change point", r["change"], r["mark"] == "confirmed", r)
                 for r in group[group["mark"].notna() & (group["change"] < 0)].to_dict("records")]
        last = group.iloc[-1].to_dict()
        if pd.notna(last["vs_mark"]) and last["vs_baseline"] < 0:
            found.append(("against the baseline", last["vs_baseline"], bool(last["fails"]), last))
        for what, change, confirmed, r in found:
            failed |= confirmed
            print(f"{'slowdown' if confirmed else 'unconfirmed slowdown (not failed)'}: "
                  f"{r['cell_id']} at {runs[r['run']].label}: {change * 100:+.1f}% ({what})",
                  file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
