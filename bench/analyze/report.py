"""One run's report: summary.csv, records.csv, report.md and report.html, plots.

The markdown and the HTML are rendered from the same list of sections (the same
pandas frames), so both always carry the same tables.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analyze.arithmetic import ARITHMETIC_LEGEND, arithmetic_table
from bench.analyze.breakdown import BREAKDOWN_LEGEND, breakdown_table
from bench.analyze.comm import COMM_LEGEND, comm_display, comm_table
from bench.analyze.ddp_check import DDP_CHECK_LEGEND, ddp_check, ddp_check_display
from bench.analyze.ledger import (
    LEDGER_LEGEND,
    MOST_OVERHEAD_LEGEND,
    efficiency_note,
    kinds_table,
    ledger_rows,
    most_overhead_table,
)
from bench.analyze.load import latest, load_records, read_env
from bench.analyze.overhead import OVERHEAD_LEGEND, overhead_table
from bench.analyze.pages import Section, html_page, markdown_page
from bench.analyze.summary import not_run, summarize
from bench.analyze.tables import (
    FASTEST_LEGEND,
    LEGEND,
    busy_notes,
    fastest_table,
    main_table,
    render,
    short_reason,
)
from bench.record import RunDir

# (label, key in env.json as written by bench.measure.env.capture_env, nested keys dotted)
ENV_LINES = (("host", "hostname"), ("OS", "os"), ("CPU", "cpu_model"), ("GPUs", "gpus"),
             ("GPU driver", "gpu_driver"), ("CUDA (torch build)", "cuda"), ("python", "python"),
             ("torch", "versions.torch"), ("lightning", "versions.lightning"), ("git", "git_sha"))


# The report's sections that the terminal gets too (the rest are in the files).
TERMINAL_SECTIONS = ("Fastest cells", "Where the time goes", "Lightning against its control",
                     "Communication", "DDP communication: measured in training vs all_reduce")


def report_sections(summary: pd.DataFrame, skipped: pd.DataFrame,
                    records: pd.DataFrame | None = None) -> list[Section]:
    table, best, overhead = main_table(summary), fastest_table(summary), overhead_table(summary)
    baselines = summary["baseline_cell_id"].dropna().unique() if len(summary) else []
    skipped_view = skipped.assign(reason=skipped["reason"].map(short_reason))
    return [
        Section("Results", table, "No cell produced a measurement.", [
            *LEGEND, "baseline cells: " + (", ".join(baselines)
                                           or "none (no 1-device 32-true single cell)"),
            *busy_notes(latest(records) if records is not None else pd.DataFrame())]),
        Section("Fastest cells", best, "No cell produced a measurement.", list(FASTEST_LEGEND)),
        Section("Where the time goes", breakdown_table(summary),
                "No cell recorded the phases of its steps.", list(BREAKDOWN_LEGEND)),
        Section("What each cell computed", arithmetic_table(
            records if records is not None else pd.DataFrame()),
                "No record says what arithmetic it ran.", list(ARITHMETIC_LEGEND)),
        # Only in runs that have a Lightning cell beside its control (raw, engine-*).
        *([Section("Lightning against its control", overhead, "", list(OVERHEAD_LEGEND))]
          if len(overhead) else []),
        *comm_sections(records if records is not None else pd.DataFrame()),
        *ledger_sections(records if records is not None else pd.DataFrame()),
        Section(f"Not run ({len(skipped)})", skipped_view, "Every cell ran."),
    ]


def comm_sections(records: pd.DataFrame) -> list[Section]:
    """The comm cells' collectives (bench.analyze.comm) and DDP's communication in
    training beside them (bench.analyze.ddp_check), when the run has them."""
    table, check = comm_display(comm_table(records)), ddp_check(records)
    return [*([Section("Communication", table, "", list(COMM_LEGEND))] if len(table) else []),
            *([Section("DDP communication: measured in training vs all_reduce",
                       ddp_check_display(check), "", list(DDP_CHECK_LEGEND))]
              if len(check) else [])]


def ledger_sections(records: pd.DataFrame) -> list[Section]:
    """Where the cells' wall time went (bench.analyze.ledger), when any record says."""
    rows = ledger_rows(records)
    if not len(rows):
        return []
    return [Section("Where a cell's wall time goes", kinds_table(rows), "",
                    [efficiency_note(records), *LEDGER_LEGEND]),
            Section("Cells with the most overhead", most_overhead_table(rows), "",
                    list(MOST_OVERHEAD_LEGEND))]


def write_report(run_dir: str | Path) -> str:
    """Write summary.csv, records.csv(.parquet), report.md/.html and plots; return the
    terminal table."""
    from bench.analyze import plots  # matplotlib is only needed when writing files

    path = Path(run_dir)
    paths = RunDir(path.parent if path.is_file() else path)
    df = load_records(paths.path)
    title = f"mnist-bench report: {paths.run_id}"
    if df.empty:  # interrupted, or cut short, before its first record
        empty = [Section("Results", pd.DataFrame(), "No cell has a record yet.", [])]
        (paths.path / "report.md").write_text(markdown_page(title, [], empty, []))
        (paths.path / "report.html").write_text(html_page(title, [], empty, []))
        return "No cell has a record yet."
    summary, skipped = summarize(df), not_run(df)
    summary.to_csv(paths.path / "summary.csv", index=False)
    flat = df.drop(columns=["raw"]).map(  # nested blocks (hardware, machine) as JSON
        lambda v: json.dumps(v, default=str) if isinstance(v, dict | list) else v)
    flat.to_csv(paths.path / "records.csv", index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        flat.to_parquet(paths.path / "records.parquet", index=False)
    pngs = plots.make_plots(df, summary, paths.plots)
    sections = report_sections(summary, skipped, df)
    env = env_summary(paths, df)
    (paths.path / "report.md").write_text(markdown_page(title, env, sections, pngs))
    (paths.path / "report.html").write_text(html_page(title, env, sections, pngs))
    if not len(sections[0].table):
        return "No cell produced a measurement."
    # The terminal gets the measured tables; "Not run" is in the report files.
    shown = [s for s in sections[1:] if len(s.table) and s.title in TERMINAL_SECTIONS]
    warnings = [f"WARNING {note}" for note in busy_notes(latest(df))]
    return "\n\n".join([render(sections[0].table),
                        *(f"{s.title}:\n{render(s.table)}" for s in shown),
                        *(["\n".join(warnings)] if warnings else [])])


def env_summary(run_dir: RunDir, df: pd.DataFrame) -> list[tuple[str, str]]:
    """Short (label, value) lines from env.json, falling back to the records' env_key."""
    found = read_env(run_dir.path)
    env = pd.json_normalize(found).iloc[0].to_dict() if found else {}
    lines = []
    for label, key in ENV_LINES:
        value = env.get(key)
        if key == "gpus" and value == []:
            value = "none"
        if value is not None and value not in ("", []):
            dirty = " (uncommitted changes)" if label == "git" and env.get("git_dirty") else ""
            lines.append((label, _env_value(value) + dirty))
    # Without env.json the records still say where they ran (env_key).
    for label, column in (("host", "env_hostname"), ("device", "env_device"),
                          ("torch", "env_torch"), ("lightning", "env_lightning")):
        if not env and column in df and df[column].notna().any():
            lines.append((label, ", ".join(map(str, df[column].dropna().unique()))))
    counts = df.drop_duplicates(["cell_id", "repeat"], keep="last")["status"].value_counts()
    lines.append(("records", ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"))
    if not env:
        lines.append(("note", "env.json missing or unreadable"))
    return lines


def _env_value(value: Any) -> str:
    if isinstance(value, list):  # e.g. 8 identical GPU names -> "8 x NVIDIA H100"
        names = [v.get("name", str(v)) if isinstance(v, dict) else str(v) for v in value]
        return ", ".join(f"{names.count(n)} x {n}" if names.count(n) > 1 else n
                         for n in dict.fromkeys(names))
    return str(value)
