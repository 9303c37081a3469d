"""Every metric, declared once: its name, unit, how it is derived, how it is shown
and how it is compared. Records, the results table, the plots and
``bench.compare`` all read this list; adding a metric is one entry here plus its
derivation in bench.measure.derive (a test checks that the two agree).

``stored`` metrics are in each record's ``metrics`` block (derived from the
record's raw values when the cell ends); the others are derived on read, across
records, by bench.analyze.summary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Metric:
    name: str
    unit: str  # "" for plain numbers and labels
    derivation: str
    label: str | None = None  # column header in the results table; None: not a column
    display: str = "num"  # bench.analyze.tables.fmt kind: num | pct | x
    better: str | None = None  # "higher" | "lower": the direction of an improvement
    compare: bool = False  # a B/A column in bench.compare
    stored: bool = True
    numeric: bool = True


# The phases of a training step, in the order a step goes through them
# (bench.measure.clock marks them). "rest" is whatever no other phase claims:
# framework code, logging, communication that is not overlapped with compute.
PHASES = ("data", "forward", "backward", "optimizer", "rest")

# Where a cell's wall time goes (bench.measure.ledger), in the order a cell goes
# through them: from the moment the orchestrator asks for its process to the moment it
# has read its record. The parts add up to the cell's wall (cell_wall_s).
LEDGER_PARTS = {
    "start": "the orchestrator asks for the process -> bench.cell's first line: a fork "
             "of the preload server (the run's first cell waits for its preload), or "
             "Python's start-up",
    "imports": "bench.cell's imports: torch, Lightning, the harness (none in a fork)",
    "setup": "imports done -> the first warm-up step: settings, seed, model, data, the "
             "Trainer and its process group, the calibrated peaks",
    "warmup": "the warm-up steps (the step clock's)",
    "window": "the measured window (the step clock's; on CUDA the host's intervals)",
    "validation": "the validation inside fit (the clock's paused time) and any validation "
                  "or test after training",
    "teardown": "training done -> the record built (Lightning's teardown, the machine's "
                "state, derived metrics), and waiting for the other ranks to end",
    "wandb": "finishing the cell's wandb run (its start is in setup)",
    "exit": "the record written -> the orchestrator sees the process gone (within its "
            "0.1 s poll)",
    "handoff": "the process gone -> the orchestrator has read the record (under torchrun: "
               "the wandb run finished -> every rank has left the cell)",
    "other": "the cell's wall less every part above: gaps between them",
}

# A cell is "unstable" above either (bench.analyze.summary).
UNSTABLE_WINDOW_MEDIAN_RATIO = 1.10
UNSTABLE_REPEAT_CV = 0.10

# Which images a validation ran on (metric val_images). A throughput cell's in-fit
# validation is a sanity check (the model learned, nothing is NaN), so it runs on the
# first SANITY_VAL_IMAGES images of the seeded 5000-image validation split, the same
# images for every cell and both backends; accuracy cells validate on all
# FULL_VAL_IMAGES, as every record written before val_images existed did.
# Why 480: a tenth of the whole split's cost (on a 2-core CPU 0.3-0.5 s a cell, from
# 4.7-8.4 s on the whole split), a binomial standard error near 1.8 points at 80%
# accuracy (the gate's only check on a throughput cell's accuracy looks for a halving),
# every class present (about 40-60 images each), and it divides evenly over 1-6, 8,
# 10, 12, 16 and 32 ranks, so Lightning's DistributedSampler pads no rank's share with
# repeated images. Records before it ran on 960 (their val_images says so).
SANITY_VAL_IMAGES = 480
FULL_VAL_IMAGES = 5000  # mnist_core.data.VAL_SIZE; bench.metrics does not import torch
# Metrics measured on the validation images: like with like only (same val_images).
VALIDATION_METRICS = ("val_acc", "best_val_acc", "val_loss")

# Communication cells (mode "comm", bench.execute.backends.comm): the collectives they
# time, and nccl-tests' bus-bandwidth factor of each (doc/PERFORMANCE.md there): busbw =
# algbw x the factor, the bytes each rank's link carries per byte of the op's size, so
# that busbw is comparable across world sizes and ops. At one rank nothing is sent: 0.
COMM_OPS = ("all_reduce", "all_gather", "reduce_scatter")


def busbw_factor(op: str, world_size: int) -> float:
    """nccl-tests' factor: all_reduce 2(n-1)/n; all_gather and reduce_scatter (n-1)/n."""
    if op not in COMM_OPS:
        raise ValueError(f"unknown collective {op!r}; valid: {', '.join(COMM_OPS)}")
    n = world_size
    return (2 if op == "all_reduce" else 1) * (n - 1) / n


# In the order of the results table's columns.
METRICS: tuple[Metric, ...] = (
    Metric(name="samples_per_s", unit="samples/s", label="samples/s", better="higher",
           compare=True,
           derivation="samples summed over every rank / the slowest rank's measured window"),
    Metric(name="samples_per_s_median", unit="samples/s", better="higher",
           derivation="samples summed over every rank / the slowest rank's (measured steps "
                      "x median step): the window figure without its outlying steps"),
    Metric(name="window_median_ratio", unit="x", display="x",
           derivation="the slowest rank's window / (its measured steps x its median step); "
                      "1.00 when every step took as long, above 1 when some steps were "
                      "slow (warm-up not over, a transient on the machine)"),
    Metric(name="window_steps", unit="steps",
           derivation="steps measured on each rank: the cell's steps under window=fixed; "
                      "under window=time at least those, as many as min_window_s takes at "
                      "the warm-up's step time, chosen in the cell's first repeat of the run "
                      "(raw.window says how)"),
    Metric(name="window_s", unit="s",
           derivation="the slowest rank's measured window: the seconds samples_per_s "
                      "divides by"),
    Metric(name="warmup_steps_taken", unit="steps",
           derivation="steps warm-up took (bench.measure.warmup: at least the cell's "
                      "warmup_steps, then until the last 3 are within 10% of their median)"),
    Metric(name="warmup_steady", unit="", numeric=False,
           derivation="warm-up ended steady on every rank; false: it hit its bound (4x "
                      "warmup_steps) first; None: a fixed warm-up"),
    Metric(name="samples_per_s_cv", unit="fraction", display="pct", stored=False,
           derivation="standard deviation / mean of samples_per_s over the ok repeats"),
    Metric(name="unstable", unit="", numeric=False, stored=False,
           derivation="window_median_ratio above 1.10 in any repeat, samples_per_s_cv "
                      "above 10% (pyperf's threshold), or a warm-up that never became "
                      "steady: the throughput is not steady enough to act on"),
    Metric(name="busy", unit="", numeric=False, stored=False,
           derivation="a repeat ran while processes outside the cell used over 10% of the "
                      "CPUs, or the hypervisor stole over 5% (bench.measure.machine_state)"),
    Metric(name="samples_per_s_per_device", unit="samples/s", label="/device", better="higher",
           derivation="samples_per_s / world size"),
    Metric(name="speedup", unit="x", label="speedup", display="x", stored=False,
           derivation="samples_per_s / that of the 1-device 32-true single cell "
                      "(same accelerator and batch size)"),
    Metric(name="scaling_eff", unit="fraction", label="scaling", display="pct", stored=False,
           derivation="samples_per_s(N devices) / (N x samples_per_s of the same workload "
                      "on 1 device)"),
    Metric(name="step_ms_p50", unit="ms", label="step p50 ms", better="lower", compare=True,
           derivation="median of every rank's measured step times"),
    Metric(name="step_ms_p90", unit="ms", better="lower",
           derivation="90th percentile of every rank's measured step times"),
    Metric(name="step_ms_p99", unit="ms", better="lower",
           derivation="99th percentile of every rank's measured step times"),
    Metric(name="host_step_ms_p50", unit="ms", better="lower",
           derivation="CUDA: median of the host's intervals between the same step "
                      "boundaries (dispatch, not device time); elsewhere step_ms_p50"),
    Metric(name="data_wait_frac", unit="fraction", label="data wait", display="pct",
           better="lower",
           derivation="the worst rank's summed data phase (fetch from the loader + move "
                      "to the device) / its window"),
    *(Metric(name=f"step_{phase}_ms", unit="ms", better="lower",
             derivation=f"the {phase} phase of a step ({about}): its mean over the "
                        "measured steps of the slowest rank; the five phases add up to "
                        "that rank's window / steps")
      for phase, about in (
          ("data", "fetch from the loader and move to the device"),
          ("forward", "the forward pass and loss; in Lightning the whole training_step"),
          ("backward", "loss.backward, gradient reduction that it waits for"),
          ("optimizer", "zero_grad and the optimizer step"),
          ("rest", "everything else: framework, logging, communication not overlapped"))),
    Metric(name="flops_per_sample", unit="FLOP",
           derivation="torch.utils.flop_counter on a meta-device copy, forward + backward"),
    Metric(name="achieved_tflops", unit="TFLOP/s", better="higher",
           derivation="samples_per_s x flops_per_sample"),
    Metric(name="mfu", unit="fraction", label="MFU", display="pct", better="higher", compare=True,
           derivation="achieved_tflops / peak_tflops"),
    Metric(name="peak_tflops", unit="TFLOP/s",
           derivation="summed over ranks: datasheet dense peak (GPU) or calibrated matmul (CPU)"),
    Metric(name="joules_per_sample", unit="J", label="J/sample", better="lower", compare=True,
           derivation="energy_j / samples in the window"),
    Metric(name="avg_watts", unit="W", label="W",
           derivation="energy_j / the slowest rank's window"),
    Metric(name="energy_j", unit="J",
           derivation="the hardware's energy counters over the measured window, summed: "
                      "NVML's total energy per GPU, RAPL's packages once per node on CPU "
                      "(bench.measure.energy); none where a rank's counter was unreadable"),
    Metric(name="energy_source", unit="", numeric=False,
           derivation="nvml or rapl; none where no counter could be read (the record's "
                      "raw energy says why)"),
    Metric(name="peak_source", unit="", numeric=False,
           derivation="table:<gpu>:<dtype>, calibrated, or why no peak is known"),
    Metric(name="peak_mem_alloc_mb", unit="MB", better="lower",
           derivation="max over ranks of torch.cuda.max_memory_allocated"),
    Metric(name="peak_mem_reserved_mb", unit="MB", better="lower",
           derivation="max over ranks of torch.cuda.max_memory_reserved"),
    Metric(name="peak_rss_mb", unit="MB", better="lower",
           derivation="max over ranks of the process's peak resident set"),
    Metric(name="params_mb", unit="MB", label="params MB", better="lower",
           derivation="parameters this rank holds (its shard when sharded), largest rank; "
                      "hand-written loops"),
    Metric(name="grads_mb", unit="MB", label="grads MB", better="lower",
           derivation="gradients held after the last backward (the parameters' .grad, "
                      "DeepSpeed's partitioned gradient buffers), largest rank; "
                      "hand-written loops"),
    Metric(name="optimizer_state_mb", unit="MB", label="optim MB", better="lower",
           derivation="optimizer state (Adam's moments) plus DeepSpeed's fp32 master "
                      "partition, largest rank"),
    Metric(name="peak_mem_mb", unit="MB", label="peak MB", better="lower", compare=True,
           stored=False, derivation="peak_mem_alloc_mb on CUDA, peak_rss_mb elsewhere"),
    Metric(name="val_acc", unit="fraction", label="val acc", display="pct", better="higher",
           compare=True,
           derivation="the last validation's accuracy on its val_images held-out images "
                      f"({SANITY_VAL_IMAGES} in throughput cells, {FULL_VAL_IMAGES} in "
                      "accuracy cells)"),
    Metric(name="best_val_acc", unit="fraction", display="pct", better="higher",
           derivation="accuracy cells: the best validation accuracy over the curve"),
    Metric(name="val_loss", unit="", better="lower",
           derivation="the last validation's loss on its val_images images"),
    Metric(name="val_images", unit="images",
           derivation=f"images the validation ran on: the first {SANITY_VAL_IMAGES} of the "
                      f"seeded {FULL_VAL_IMAGES}-image split in throughput cells (a sanity "
                      f"check), all {FULL_VAL_IMAGES} in accuracy cells; a record without it "
                      f"(written before it existed) ran on all {FULL_VAL_IMAGES}"),
    Metric(name="test_acc", unit="fraction", label="test acc", display="pct", better="higher",
           derivation="accuracy on the 10000 test images (accuracy cells)"),
    Metric(name="test_loss", unit="", better="lower", derivation="test loss (accuracy cells)"),
    Metric(name="time_to_target_s", unit="s", label="to target s", better="lower",
           derivation="wall clock from the first training step to the target val_acc, "
                      "validation included, checkpoint writes excluded"),
    Metric(name="checkpoint_s", unit="s",
           derivation="accuracy cells: seconds ModelCheckpoint spent writing and removing "
                      "checkpoint files (kept off time_to_target_s)"),
    Metric(name="steps_to_target", unit="steps", better="lower",
           derivation="optimizer steps to the target val_acc"),
    Metric(name="compile_s", unit="s", better="lower",
           derivation="seconds torch.compile spent compiling the training graph, forward "
                      "and backward (dynamo's own timers, every frame and recompile before "
                      "the first validation), the slowest rank's; each (cell, repeat) "
                      "starts from an empty inductor cache"),
    Metric(name="compile_val_s", unit="s", better="lower",
           derivation="seconds torch.compile spent compiling after training first handed "
                      "over to validation: the validation graph (inference mode, its own "
                      "batch size) and any later recompile, the slowest rank's"),
    Metric(name="allreduce_ms", unit="ms", better="lower",
           derivation="comm cells: the median time of an all_reduce of the model's "
                      "gradients (its parameters in the cell's dtype), each iteration the "
                      "slowest rank's"),
    Metric(name="allreduce_algbw_gbps", unit="GB/s", better="higher",
           derivation="comm cells: the gradients' bytes / allreduce_ms (1e9 bytes per GB); "
                      "the verdict's figure for a comm cell in bench.compare (busbw is 0 at "
                      "one rank)"),
    Metric(name="allreduce_busbw_gbps", unit="GB/s", label="busbw GB/s", better="higher",
           compare=True,
           derivation="comm cells: allreduce_algbw_gbps x 2(n-1)/n, nccl-tests' bus "
                      "bandwidth, comparable across world sizes; 0 at one rank"),
    Metric(name="wall_s", unit="s", derivation="the cell's wall clock, set-up included"),
    Metric(name="cell_wall_s", unit="s", stored=False,
           derivation="the orchestrator's wall clock for the cell: from asking for its "
                      "process to reading its record (its ledger's wall; under torchrun from "
                      "the walk reaching the cell to every rank leaving it)"),
    Metric(name="overhead_s", unit="s", better="lower", stored=False,
           derivation="cell_wall_s less the warm-up and the measured window (rank 0's): what "
                      "the cell cost beyond training"),
    Metric(name="harness_efficiency", unit="fraction", display="pct", better="higher",
           stored=False, derivation="rank 0's measured window / cell_wall_s"),
)
# The figure bench.compare's verdict is on, by cell mode (higher is better): a training
# cell's samples/s; a comm cell's all_reduce algbw (its busbw is 0 at one rank).
VERDICT_METRICS = {"comm": "allreduce_algbw_gbps"}


def verdict_metric(mode: str | None) -> str:
    return VERDICT_METRICS.get(str(mode), "samples_per_s")


BY_NAME = {metric.name: metric for metric in METRICS}
STORED_NAMES = tuple(m.name for m in METRICS if m.stored)
NUMERIC_NAMES = tuple(m.name for m in METRICS if m.numeric)
TABLE_METRICS = tuple(m for m in METRICS if m.label is not None)
COMPARED_METRICS = tuple(m for m in METRICS if m.compare)
