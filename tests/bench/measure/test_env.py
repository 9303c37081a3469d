"""bench.measure.env: what env.json holds and the keys that decide comparability."""

from __future__ import annotations

import json
import socket

import numpy
import pandas
import pytest
import torch

from bench.measure.env import capture_env, env_key, slurm_job, version


def released(module_version: str) -> str:
    """A module's ``__version__`` without its local build tag: ``2.4.1+cu124`` is
    the distribution ``2.4.1`` (what a PyPI wheel's metadata says)."""
    return module_version.split("+")[0]


def same_release(recorded: str | None, module_version: str) -> bool:
    return recorded is not None and released(recorded) == released(module_version)


def test_env_key_names_the_host_device_and_versions() -> None:
    key = env_key("cpu")
    assert key["hostname"] == socket.gethostname()
    assert same_release(key["torch"], torch.__version__)
    # lightning's __version__ would cost seconds of import: a release string will do
    assert key["lightning"] is not None and key["lightning"][0].isdigit()
    assert key["device"]  # the CPU model on a CPU


def test_capture_env_is_json_with_versions_and_the_command() -> None:
    env = capture_env(["python", "-m", "bench.run"])
    assert json.loads(json.dumps(env)) == env
    assert env["command"] == ["python", "-m", "bench.run"]
    for name, module in (("torch", torch), ("pandas", pandas), ("numpy", numpy)):
        assert same_release(env["versions"][name], module.__version__), name
    assert env["cpu_cores_usable"] >= 1 and env["gpu_count"] == len(env["gpus"])
    assert version("not-a-distribution-here") is None


def test_under_slurm_the_record_names_the_job_and_its_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As srun sets them on a task of a job requeued once; outside a job, no slurm key."""
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES",
                 "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    assert slurm_job() is None and "slurm" not in env_key("cpu")
    assert capture_env([])["slurm"] is None
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    job = {"job_id": "4711", "node_list": "n[1-2]", "nodes": 2, "restart_count": 1}
    assert env_key("cpu")["slurm"] == job
    assert capture_env([])["slurm"] == job
