"""bench.measure.env: what env.json holds and the keys that decide comparability."""

from __future__ import annotations

import json
import socket

import numpy
import pandas
import torch

from bench.measure.env import capture_env, env_key, version


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
