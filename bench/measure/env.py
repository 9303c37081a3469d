"""The environment a run happened in: everything for env.json, and the few keys
that decide whether two records are comparable."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from bench.measure.hardware import driver_version, fingerprint

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("torch", "lightning", "torchvision", "torchmetrics", "deepspeed", "wandb", "pandas",
             "numpy")


def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# torch is imported where it is used, not on import: bench.run imports this module,
# and its preload server's imports overlap the orchestrator's own torch import only
# when that comes after the server is started (bench.run.main).


def device_name(accelerator: str = "cpu") -> str:
    import torch

    if accelerator == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return cpu_model()


def slurm_job() -> dict[str, Any] | None:
    """The SLURM job this process runs in (None outside one): its id, its nodes and how
    often it was requeued, so that a record says which job, and which attempt, made it."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None:
        return None
    return {"job_id": job_id, "node_list": os.environ.get("SLURM_JOB_NODELIST"),
            "nodes": int(os.environ.get("SLURM_JOB_NUM_NODES") or 1),
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def env_key(accelerator: str = "cpu") -> dict[str, Any]:
    """What must match for two records to be compared without --force: the host, the
    device, the hardware's fingerprint (bench.measure.hardware) and the versions. Under
    SLURM also ``slurm`` (slurm_job): where the record came from, never compared."""
    key = {"hostname": socket.gethostname(), "device": device_name(accelerator),
           "hardware": fingerprint(accelerator),
           "torch": version("torch"), "lightning": version("lightning")}
    if (job := slurm_job()) is not None:
        key["slurm"] = job
    return key


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append({"index": index, "name": props.name,
                      "memory_gb": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}"})
    return found


def capture_env(argv: list[str] | None = None) -> dict[str, Any]:
    """The full environment for env.json."""
    import torch

    cuda = torch.cuda.is_available()
    nccl = torch.cuda.nccl.version() if cuda and hasattr(torch.cuda, "nccl") else None
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "gpus": gpus(),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_driver": driver_version() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
        "python": sys.version.split()[0],
        "versions": {name: version(name) for name in LIBRARIES},
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "command": argv if argv is not None else sys.argv,
        "slurm": slurm_job(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
