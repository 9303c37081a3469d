"""``python -m bench.scale RUN [RUN ...]``: what N devices on M nodes would give, from
one device's measured step phases and an alpha-beta model of each strategy's
collectives (bench.analyze.scale), over a named link's datasheet figures or the link
the run's communication cells measured; and the model against every multi-device cell
the runs measured, out of sample.

    python -m bench.scale RUN [RUN ...] [--devices 8,64,512] [--devices-per-node 8]
        [--link nvlink4|pcie5|ib-ndr400|eth100|measured] [--intra-link NAME|measured]
        [--comm-csv FILE] [--overlap auto|FRACTION] [--single CELL] [--target PCT]
        [--out DIR]
    python -m bench.scale --power [--target PCT]    how often a check's call errs

Exit codes: 0 the projection printed; 2 bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from bench.analyze.comm import comm_table
from bench.analyze.links import (
    LINKS,
    OPS,
    Link,
    LinkError,
    measured_links,
    named_link,
    one_rank_costs,
)
from bench.analyze.load import load_records, records_path
from bench.analyze.pages import Section, html_page, markdown_page
from bench.analyze.scale import FORMULA, Prediction
from bench.analyze.scale_check import (
    Check,
    Inputs,
    Links,
    check_cells,
    check_notes,
    checks_table,
    one_device_inputs,
    own_inputs,
    projection,
    projection_table,
)
from bench.analyze.scale_crowding import (
    Crowding,
    crowding_factor,
    crowding_notes,
    projection_crowding,
)
from bench.analyze.scale_records import threads_per_rank
from bench.analyze.scale_verdict import CANT_TELL, TARGET
from bench.analyze.scale_words import assumptions
from bench.analyze.summary import summarize
from bench.analyze.tables import render

COMM_COLUMNS = ("cell_id", "op", "label", "dtype", "bytes", "world_size", "nodes", "time_s",
                "algbw_gbps", "busbw_gbps")
LINK_CHOICES = (*LINKS, "measured")


class ScaleError(ValueError):
    """Bad input: printed as one error line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=(
        "Project step time, samples/s and scaling efficiency of DDP, FSDP and ZeRO-1/2/3 "
        "to N devices from one device's measured phases (a model, not a measurement), "
        "and check the model against the multi-device cells the runs measured."))
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="run directories (or records.jsonl): the one-device cells, the "
                             "multi-device cells to check, the comm cells")
    parser.add_argument("--devices", default="8,64,512", help="device counts (default 8,64,512)")
    parser.add_argument("--devices-per-node", type=int, default=8,
                        help="devices per node (default 8)")
    parser.add_argument("--link", default="measured", choices=LINK_CHOICES,
                        help="the link between nodes, and within one unless --intra-link: a "
                             "datasheet's figures, or measured by the runs' comm cells "
                             "(default measured)")
    parser.add_argument("--intra-link", choices=LINK_CHOICES,
                        help="the link between the devices of one node (default: --link)")
    parser.add_argument("--comm-csv", metavar="FILE",
                        help="a comm frame measured elsewhere (bench.analyze.comm's columns), "
                             "for --link measured instead of the runs' comm cells")
    parser.add_argument("--overlap", default="auto",
                        help="share of a phase's compute a collective may hide behind, 0-1; "
                             "auto: 1 on CUDA (own stream), 0 on CPU (the collectives need "
                             "the cores the compute uses)")
    parser.add_argument("--single", metavar="CELL",
                        help="the one-device cell the projection starts from (default: the "
                             "one paired with the first checked cell, else the first single)")
    parser.add_argument("--target", type=float, default=TARGET * 100, metavar="PCT",
                        help="the error a check accepts, in percent (default 15): each check "
                             "is called within, too fast, too slow or can't tell at it")
    parser.add_argument("--power", action="store_true",
                        help="print how often the checks' calls err (seeded simulation); "
                             "no runs needed")
    parser.add_argument("--out", metavar="DIR", help="write scale.md, scale.html and the PNG")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    return parser


def device_counts(text: str, per_node: int) -> list[int]:
    """--devices as numbers: each fits in one node or fills whole nodes."""
    if per_node < 1:
        raise ScaleError("--devices-per-node must be at least 1")
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ScaleError(f"--devices {text!r}: give whole numbers, e.g. 8,64,512") from None
    if not counts or min(counts) < 1:
        raise ScaleError(f"--devices {text!r}: give device counts of at least 1")
    for count in counts:
        if count > per_node and count % per_node:
            raise ScaleError(f"{count} devices do not fill nodes of {per_node} devices")
    return counts


def comm_frame(records: pd.DataFrame, csv: str | None) -> pd.DataFrame | None:
    """The comm cells' frame: --comm-csv, else the runs' comm cells; None without any."""
    if csv:
        try:
            frame = pd.read_csv(csv)
        except (OSError, ValueError) as error:
            raise ScaleError(f"--comm-csv {csv}: {error}") from None
    else:
        frame = comm_table(records)
    missing = [c for c in COMM_COLUMNS if c not in frame]
    if missing:
        raise ScaleError(f"the comm frame lacks columns {', '.join(missing)}")
    return frame if len(frame) else None


def level(name: str, frame: pd.DataFrame | None, across_nodes: bool
          ) -> tuple[dict[str, Link] | None, str]:
    """One level's links by op, or None and why."""
    if name != "measured":
        return {op: named_link(name) for op in OPS}, ""
    if frame is None:
        return None, ("--link measured: the runs have no comm cells (and no --comm-csv); "
                      f"name a link instead: {', '.join(LINKS)}")
    try:
        return measured_links(frame, across_nodes), ""
    except LinkError as error:
        return None, str(error)


def choose_links(args: argparse.Namespace, frame: pd.DataFrame | None) -> Links:
    intra, why_intra = level(args.intra_link or args.link, frame, across_nodes=False)
    inter, why_inter = level(args.link, frame, across_nodes=True)
    return Links(intra, inter, {"intra": why_intra, "inter": why_inter}, one_rank_costs(frame))


def overlap_for(text: str, accelerator: str) -> float:
    if text == "auto":
        return 1.0 if accelerator == "cuda" else 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ScaleError(f"--overlap {text!r}: give auto or a fraction from 0 to 1")
    return value


def projection_inputs(summary: pd.DataFrame, records: pd.DataFrame, single: str | None,
                      paired: list[Inputs]) -> Inputs:
    """The one-device single or raw cell the projection starts from."""
    controls = [inputs for inputs in paired if inputs.strategy in ("single", "raw")]
    if single is None and controls:
        return controls[0]
    ones = summary[(summary["total_devices"] == 1) & summary["n"].gt(0)
                   & summary["strategy"].isin(["single", "raw"])]
    if single is not None:
        ones = ones[ones["cell_id"] == single]
    if ones.empty:
        raise ScaleError(f"no ok one-device single or raw cell {single!r} in the runs" if single
                         else "the runs hold no ok one-device single or raw cell")
    row = ones.iloc[0].to_dict()
    inputs = one_device_inputs(summary, records, row, threads_per_rank(records).get(row["cell_id"]))
    if isinstance(inputs, str):
        raise ScaleError(f"{row['cell_id']}: {inputs}")
    return inputs


def load(runs: list[str]) -> pd.DataFrame:
    frames = []
    for run in runs:
        if not records_path(run).is_file():
            raise ScaleError(f"{run}: no records.jsonl there")
        frames.append(load_records(run))
    return pd.concat(frames, ignore_index=True)


def error_note(checks: list[Check], target: float) -> str:
    verdicts = {c.cell_id: c.verdict(target) for c in checks if c.predicted}
    if not verdicts:
        return "no multi-device cell of the runs could be checked"
    calls = Counter(v.call for v in verdicts.values())
    return ("errors (predicted / measured samples/s - 1, geometric means over the repeats): "
            + ", ".join(f"{cell} {v.error * 100:+.1f}%" for cell, v in verdicts.items())
            + f"; at {target * 100:g}%: " + ", ".join(f"{calls[call]} {call}" for call in (
                "within", "too fast", "too slow", CANT_TELL))
            + " (95% intervals from both sides' repeats, not the link's or the crowding's "
            "noise; how often these calls err: python -m bench.scale --power)")


def power(target: float, markdown: bool) -> int:
    """How often a check's call errs at ``target``, by seeded simulation."""
    from bench.analyze.power import COMPARISONS, check_table

    table = check_table(target)
    shown = table.assign(**{column: table[column].map(lambda v: f"{100 * v:.1f}%")
                            for column in table.columns[2:]})
    print(f"Calls of a scaling check at {target * 100:g}% ({COMPARISONS} simulated checks per "
          "row, seed 0; noise: the spread of a repeat's samples/s between processes, both "
          "sides; repeats: a side):")
    print(render(shown, markdown=markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = args.target / 100
    if not 0 < target < 1:
        print(f"error: --target {args.target:g}: give a percentage between 0 and 100",
              file=sys.stderr)
        return 2
    if args.power:
        return power(target, args.markdown)
    try:
        if not args.runs:
            raise ScaleError("give one run directory or more (or --power)")
        devices = device_counts(args.devices, args.devices_per_node)
        records = load(args.runs)
        summary = summarize(records)
        links = choose_links(args, comm_frame(records, args.comm_csv))
        overlap = {accelerator: overlap_for(args.overlap, accelerator)
                   for accelerator in ("cpu", "cuda")}
        checks = check_cells(summary, records, links, overlap)
        inputs = projection_inputs(summary, records, args.single,
                                   [c.inputs for c in checks if c.predicted and c.inputs])
        own = own_inputs(summary, records, inputs)
        # the plot's lines run from one device through the checked cells' counts too
        counts = sorted({1, *devices, *(c.predicted.devices for c in checks if c.predicted)})
        crowds = projection_crowding(summary, records, inputs.cell_id, inputs.threads, counts,
                                     args.devices_per_node)
        crowding = {g: crowding_factor(c) for g, c in crowds.items()}
        predictions = projection(inputs, devices, links, args.devices_per_node,
                                 overlap[inputs.accelerator], own, crowding)
    except (ScaleError, LinkError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sections = [
        Section("Scaling projection (a model, not a measurement)",
                projection_table(predictions), "Nothing to project.",
                [*assumptions(inputs, own, links, overlap[inputs.accelerator]),
                 *(c.words() if isinstance(c, Crowding) else f"crowding {c}"
                   for c in crowds.values())]),
        Section("Predicted against measured (out of sample)", checks_table(checks, target),
                "The runs hold no multi-device cell of a modelled strategy.",
                [error_note(checks, target),
                 "each check predicts a cell from a one-device cell of its workload at the "
                 "same threads per rank (its own strategy's where the runs have one, else "
                 "its control's) and the links chosen; the cell itself is no input",
                 *crowding_notes([c.crowding for c in checks
                                  if c.predicted and c.crowding is not None]),
                 *check_notes(summary, records, checks)])]
    print("THIS IS A MODEL, NOT A MEASUREMENT. Its formula:")
    print(FORMULA)
    for section in sections:
        print(f"\n{section.title}:")
        print(render(section.table, markdown=args.markdown) if len(section.table)
              else section.empty)
        for note in section.notes:
            print(f"{'- ' if args.markdown else ''}{note}")
    if args.out:
        lines = projection(inputs, counts, links, args.devices_per_node,
                           overlap[inputs.accelerator], own, crowding)
        write_pages(Path(args.out), args, sections, lines, checks)
    return 0


def write_pages(out: Path, args: argparse.Namespace, sections: list[Section],
                predictions: list[Prediction], checks: list[Check]) -> None:
    from bench.analyze.scale_plot import plot_projection  # matplotlib: files only

    title = "mnist-bench scaling projection"
    png = plot_projection(predictions, checks, f"{title} (model; link {args.link}, "
                          f"{args.devices_per_node} devices per node)", out, args.target / 100)
    pngs = [png] if png else []
    env = [("runs", ", ".join(args.runs)), ("link", args.link),
           ("intra-node link", args.intra_link or args.link),
           ("devices per node", str(args.devices_per_node))]
    sections = [Section("The model (a model, not a measurement)", pd.DataFrame(),
                        f"```\n{FORMULA}\n```"), *sections]
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.md").write_text(markdown_page(title, env, sections, pngs, plots_dir="."))
    (out / "scale.html").write_text(html_page(title, env, sections, pngs))
    print(f"\nscale: {out / 'scale.md'}  (html: scale.html, {len(pngs)} plot(s))")


if __name__ == "__main__":
    sys.exit(main())
