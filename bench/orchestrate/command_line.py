"""``python -m bench.run``'s command line: its options, their help, its usage line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.matrix import WARMUP_MODES, WINDOW_MODES, Cell
from bench.measure.window import MAX_WINDOW_STEPS

LIST = ""  # --matrix with no name: list the presets
USAGE = ("usage: python -m bench.run --matrix NAME|FILE.toml [options]\n"
         "       python -m bench.run --resume RUN_DIR")
NO_MATRIX = ("no matrix named: give --matrix NAME or FILE.toml (`--matrix all` runs "
             "everything this machine can run) or --resume RUN_DIR; `python -m bench.run` "
             "alone lists the presets")


def csv_list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {error}") from None
    return parse


def add_cell_settings(settings: Any) -> None:
    """The settings every cell of the run shares (Cell fields), overriding the preset's."""
    for flag, kind in (("steps", int), ("warmup-steps", int), ("seed", int),
                       ("target-acc", float), ("max-epochs", int), ("val-every-steps", int),
                       ("num-nodes", int)):
        settings.add_argument(f"--{flag}", type=kind, default=None)
    settings.add_argument(
        "--warmup", choices=WARMUP_MODES, default=None,
        help="steady (default): after --warmup-steps, warm up until the last 3 steps are "
             "within 10%% of their median, at most 4x --warmup-steps; fixed: exactly "
             "--warmup-steps")
    settings.add_argument(
        "--window", choices=WINDOW_MODES, default=None,
        help="how many steps a throughput cell measures. time (default): at least --steps "
             "and at least --min-window-s seconds, the count chosen from the warm-up's step "
             f"time in the cell's first repeat (at most {MAX_WINDOW_STEPS} steps) and kept "
             "for its every repeat in the run; fixed: exactly --steps")
    settings.add_argument(
        "--min-window-s", type=float, default=None, metavar="S",
        help="with --window time: the shortest measured window, in seconds (default "
             f"{Cell.min_window_s:g})")


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """bench.run's parser; ``description``: bench.run's docstring (its exit statuses)."""
    p = argparse.ArgumentParser(prog="python -m bench.run", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matrix", nargs="?", const=LIST, default=None, metavar="NAME|FILE",
                   help="preset (smoke, cpu, gpu, gpu-check, multi-gpu, speed, accuracy, comm, "
                        "all-strategies, all) or a TOML file of axis lists; alone: list the "
                        "presets with their cell counts here and estimated times")
    axes = p.add_argument_group("axis overrides (comma-separated lists)")
    for flag, kind in (("accelerators", str), ("devices", int), ("strategies", str),
                       ("precisions", str), ("batch-sizes", int), ("loaders", str),
                       ("compile", str), ("optimizer-impls", str), ("modes", str)):
        axes.add_argument(f"--{flag}", type=csv_list(kind), default=None)
    add_cell_settings(p.add_argument_group("settings shared by every cell"))
    p.add_argument("--repeats", type=int, default=None, help="runs per cell (seed + repeat)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cells and skip reasons, build each runnable cell's strategy, "
                        "precision plugin and DeepSpeed config; exit 1 on a problem")
    p.add_argument("--assume-gpus", type=int, default=None, metavar="N",
                   help="with --dry-run (or a bare --matrix): plan as if N CUDA GPUs (bf16), "
                        "DeepSpeed and a compiler were here")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root")
    p.add_argument("--run-id", default=None, metavar="NAME",
                   help="name the new run OUT/NAME, not by the time (a job: job-$SLURM_JOB_ID)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="finish an earlier run: only cells without an ok record run")
    p.add_argument("--cell-timeout", type=float, default=None,
                   help="seconds per cell before it is killed (default 900, accuracy "
                        "3600); under torchrun, before it ends the walk (default 3600)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST root (default $MNIST_DATA_DIR, else ./data)")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default=None,
                   help="default $WANDB_MODE, else offline")
    p.add_argument("--verbose", action="store_true", help="Lightning's progress bar and logs")
    p.add_argument("--snapshot", type=Path, default=None, metavar="DIR",
                   help="after every cell, refresh DIR with run.tar.gz (the run folder, no "
                        "compile caches), records.jsonl, env.json and report.md: whatever "
                        "finished survives a run cut short (a metered GPU slot)")
    p.add_argument("--preload", action=argparse.BooleanOptionalAction, default=True,
                   help="fork each cell from one server that imported torch, Lightning and "
                        "the cell's modules and read MNIST once per run, and a multi-rank "
                        "cell's other ranks from its rank 0 (default); --no-preload: every "
                        "cell, and every rank, a new interpreter")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="write a torch.profiler trace of the first N measured steps of each "
                        "cell to cells/<id>/trace-r<repeat>-rank<rank>.json (Perfetto, "
                        "TensorBoard); the profiled figures carry the profiler's overhead")
    return p
