"""Records -> pandas tables, CSV / Markdown / HTML report and plots for one run.

Statistics are computed here from the records, never stored instead of them:
medians and spread over the ok repeats of each cell, speed-up against the
baseline cell and scaling efficiency against the same workload on one device.

    python -m bench.report results/<run-id>
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.record import METRIC_NAMES, read_records
from bench.tables import (
    FASTEST_LEGEND,
    LEGEND,
    fastest_table,
    main_table,
    render,
    short_reason,
)

NUMERIC_METRICS = tuple(m for m in METRIC_NAMES if m != "peak_source") + ("peak_mem_mb",)
RECORD_COLUMNS = ("run_id", "cell_id", "repeat", "repeat_seed", "status", "reason", "world_size",
                  "global_batch_size", "effective_precision", "started_at", "record_wall_s", "log")
# Two cells run "the same workload" when these match; only the device count and strategy differ.
WORKLOAD_FIELDS = ("accelerator", "precision", "batch_size", "loader", "compile", "optimizer",
                   "optimizer_impl", "mode")
BASELINE_PREFER = ("loader", "compile", "optimizer", "optimizer_impl", "mode")
# Natural reading order (cheapest first) rather than alphabetical: single before ddp.
# (label, key in env.json as written by bench.env.capture_env, nested keys dotted)
ENV_LINES = (("host", "hostname"), ("OS", "os"), ("CPU", "cpu_model"), ("GPUs", "gpus"),
             ("GPU driver", "gpu_driver"), ("CUDA (torch build)", "cuda"), ("python", "python"),
             ("torch", "versions.torch"), ("lightning", "versions.lightning"), ("git", "git_sha"))
ORDER = {
    "accelerator": ("cpu", "cuda"),
    "strategy": ("single", "raw", "ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2",
                 "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload"),
    "precision": ("32-true", "16-mixed", "bf16-mixed", "bf16-true"),
}


def records_path(path: str | Path) -> Path:
    """A run directory or a records.jsonl file -> the records file."""
    path = Path(path)
    return path / "records.jsonl" if path.is_dir() else path


def load_records(path: str | Path) -> pd.DataFrame:
    """One row per record: record fields, cell fields, env_key (env_*), metrics, raw."""
    rows = []
    for rec in read_records(records_path(path)):
        eff = rec.get("effective") or {}
        row: dict[str, Any] = {
            "run_id": rec.get("run_id"), "cell_id": rec["cell_id"], "repeat": rec.get("repeat"),
            "repeat_seed": rec.get("seed"), "status": rec["status"], "reason": rec.get("reason"),
            "world_size": eff.get("world_size"), "global_batch_size": eff.get("global_batch_size"),
            "effective_precision": eff.get("precision"), "started_at": rec.get("started_at"),
            "record_wall_s": rec.get("wall_s"), "log": rec.get("log"),
        }
        for key, value in (rec.get("env_key") or {}).items():
            row[f"env_{key}"] = value
        for key, value in (rec.get("cell") or {}).items():
            row[f"cell_{key}" if key in row else key] = value  # e.g. a cell-level "repeat"
        metrics = rec.get("metrics") or {}
        row.update({name: metrics.get(name) for name in METRIC_NAMES})
        row["raw"] = rec.get("raw") or {}
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else [*RECORD_COLUMNS, *METRIC_NAMES, "raw"])
    for name in (*NUMERIC_METRICS[:-1], "world_size", "global_batch_size"):
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    # The memory a user cares about: what the allocator held on CUDA, the process RSS on CPU.
    on_cuda = df.get("accelerator", pd.Series(index=df.index, dtype=object)).eq("cuda")
    df["peak_mem_mb"] = df["peak_mem_alloc_mb"].where(on_cuda & df["peak_mem_alloc_mb"].notna(),
                                                      df["peak_rss_mb"])
    return df


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last record per (cell, repeat): a resumed run appends a newer one."""
    return df.drop_duplicates(["cell_id", "repeat"], keep="last")


def cell_fields(df: pd.DataFrame) -> list[str]:
    skip = {*RECORD_COLUMNS, *METRIC_NAMES, "peak_mem_mb", "raw"}
    return [c for c in df.columns if c not in skip and not c.startswith("env_")]


def sort_key(row: dict[str, Any]) -> tuple:
    key: list[Any] = []
    for field in ("accelerator", "strategy", "precision"):
        value, order = row.get(field), ORDER[field]
        key += [order.index(value) if value in order else len(order), str(value)]
    batch = row.get("batch_size")
    return (*key, row.get("total_devices") or 0, batch if isinstance(batch, int | float) else 0,
            str(row.get("cell_id")))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id: medians over its ok repeats, spread, speed-up, scaling efficiency.

    Every cell appears (status ok / partial / skipped / failed ...); metrics are
    NaN for cells without an ok repeat.
    """
    df = latest(df)
    fields = cell_fields(df)
    rows = []
    for cell_id, group in df.groupby("cell_id", sort=False):
        ok = group[group["status"] == "ok"]
        statuses = group["status"]
        row: dict[str, Any] = {"cell_id": cell_id, **group.iloc[-1][fields].to_dict()}
        row["status"] = ("ok" if len(ok) == len(group) else "partial" if len(ok)
                         else statuses.mode().iloc[0])
        row["n"], row["n_total"] = len(ok), len(group)
        row["world_size"] = (ok if len(ok) else group)["world_size"].max()
        row["total_devices"] = _count(row.get("devices")) * _count(row.get("num_nodes"))
        for name in NUMERIC_METRICS:
            row[name] = ok[name].median() if len(ok) else float("nan")
        row["samples_per_s_min"] = ok["samples_per_s"].min() if len(ok) else float("nan")
        row["samples_per_s_max"] = ok["samples_per_s"].max() if len(ok) else float("nan")
        sources = ok["peak_source"].dropna()
        row["peak_source"] = sources.mode().iloc[0] if len(sources) else None
        rows.append(row)
    rows.sort(key=sort_key)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    summary[["baseline_cell_id", "speedup"]] = summary.apply(
        lambda r: _relative(summary, r, _baseline(summary, r), 1), axis=1, result_type="expand")
    summary[["scaling_ref_cell_id", "scaling_eff"]] = summary.apply(
        lambda r: _relative(summary, r, _scaling_ref(summary, r), r["total_devices"])
        if r["total_devices"] > 1 else (None, float("nan")), axis=1, result_type="expand")
    return summary


def _count(value: Any) -> int:
    return int(value) if value is not None and pd.notna(value) else 1


def _pick(summary: pd.DataFrame, row: pd.Series, fixed: dict[str, Any],
          prefer: tuple[str, ...] = ()) -> pd.Series | None:
    """The measured cell matching ``fixed`` that shares most ``prefer`` fields with ``row``."""
    cand = summary[summary["samples_per_s"].notna()]
    for field, value in fixed.items():
        if field in cand:
            cand = cand[cand[field] == value]
    if cand.empty:
        return None
    score = pd.Series(0, index=cand.index)
    for field in prefer:
        if field in cand:
            score += (cand[field] == row[field]).astype(int)
    return cand.loc[score.idxmax()]  # first best match in report order: deterministic


def _baseline(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    fixed = {"accelerator": row["accelerator"], "batch_size": row.get("batch_size"),
             "devices": 1, "num_nodes": 1, "precision": "32-true", "strategy": "single"}
    return _pick(summary, row, fixed, BASELINE_PREFER)


def _scaling_ref(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The same workload on one device: same strategy if it ran on one device, else single."""
    fixed = {f: row[f] for f in WORKLOAD_FIELDS if f in row} | {"total_devices": 1}
    same = _pick(summary, row, fixed | {"strategy": row["strategy"]})
    return same if same is not None else _pick(summary, row, fixed | {"strategy": "single"})


def _relative(summary: pd.DataFrame, row: pd.Series, ref: pd.Series | None,
              devices: int) -> tuple[str | None, float]:
    """(reference cell id, throughput / (devices x reference throughput))."""
    if ref is None or pd.isna(row["samples_per_s"]):
        return None, float("nan")
    return ref["cell_id"], row["samples_per_s"] / (devices * ref["samples_per_s"])


def not_run(df: pd.DataFrame) -> pd.DataFrame:
    """Every (cell, repeat) whose latest record is not ok, with its reason."""
    bad = latest(df)
    bad = bad[bad["status"] != "ok"]
    rows = sorted(({"total_devices": 1, **r} for r in bad.to_dict("records")), key=sort_key)
    columns = ["cell_id", "repeat", "status", "reason"]
    return pd.DataFrame(rows, columns=None if rows else columns)[columns].reset_index(drop=True)


def write_report(run_dir: str | Path) -> str:
    """Write summary.csv, records.csv(.parquet), report.md/.html and plots; return the table."""
    from bench import plots  # matplotlib is only needed when writing files

    run_dir = Path(run_dir)
    run_dir = run_dir.parent if run_dir.is_file() else run_dir
    df = load_records(run_dir)
    summary, skipped = summarize(df), not_run(df)
    summary.to_csv(run_dir / "summary.csv", index=False)
    flat = df.drop(columns=["raw"])
    flat.to_csv(run_dir / "records.csv", index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        flat.to_parquet(run_dir / "records.parquet", index=False)
    pngs = plots.make_plots(df, summary, run_dir / "plots")
    table, best = main_table(summary), fastest_table(summary)
    skipped_view = skipped.assign(reason=skipped["reason"].map(short_reason))
    env = env_summary(run_dir, df)
    baselines = summary["baseline_cell_id"].dropna().unique() if len(summary) else []
    title = f"mnist-bench report: {run_dir.name}"
    md = [f"# {title}", "", *(f"- **{k}**: {v}" for k, v in env), "", "## Results", "",
          render(table, markdown=True) if len(table) else "No cell produced a measurement.", "",
          *(f"- {line}" for line in LEGEND),
          f"- baseline cells: {', '.join(baselines) or 'none (no 1-device 32-true single cell)'}",
          "", "## Fastest cells", "",
          render(best, markdown=True) if len(best) else "No cell produced a measurement.", "",
          *(f"- {line}" for line in FASTEST_LEGEND), "",
          f"## Not run ({len(skipped)})", "",
          render(skipped_view, markdown=True) if len(skipped) else "Every cell ran.", "",
          "## Plots", "", *([f"![{p.stem}](plots/{p.name})\n" for p in pngs]
                                  or ["Nothing to plot."])]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")
    (run_dir / "report.html").write_text(_html(title, env, table, skipped_view, pngs))
    if not len(table):
        return "No cell produced a measurement."
    return render(table) + ("\n\nFastest cells:\n" + render(best) if len(best) > 0 else "")


def env_summary(run_dir: Path, df: pd.DataFrame) -> list[tuple[str, str]]:
    """Short (label, value) lines from env.json, falling back to the records' env_key."""
    try:
        env = _flatten(json.loads((run_dir / "env.json").read_text()))
    except (OSError, ValueError):
        env = {}
    lines = []
    for label, key in ENV_LINES:
        value = env.get(key)
        if key == "gpus" and value == []:
            value = "none"
        if value not in (None, "", []):
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


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def _env_value(value: Any) -> str:
    if isinstance(value, list):  # e.g. 8 identical GPU names -> "8 x NVIDIA H100"
        names = [v.get("name", str(v)) if isinstance(v, dict) else str(v) for v in value]
        return ", ".join(f"{names.count(n)} x {n}" if names.count(n) > 1 else n
                         for n in dict.fromkeys(names))
    return str(value)


def _html(title: str, env: list[tuple[str, str]], table: pd.DataFrame,
          skipped: pd.DataFrame, pngs: list[Path]) -> str:
    esc = html.escape
    images = "".join(
        f'<figure><img alt="{esc(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in pngs)
    skipped_html = skipped.to_html(index=False) if len(skipped) else "<p>Every cell ran.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:90%}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style>
</head><body><h1>{esc(title)}</h1><ul>{"".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>"
                                              for k, v in env)}</ul>
<h2>Results</h2>{table.to_html(index=False) if len(table) else "<p>No measurements.</p>"}
<p>{"<br>".join(map(esc, LEGEND))}</p>
<h2>Not run ({len(skipped)})</h2>{skipped_html}<h2>Plots</h2>{images}</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description="Write the tables, plots and report of a run.")
    parser.add_argument("run_dir", help="results/<run-id> (holding records.jsonl)")
    args = parser.parse_args(argv)
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
