"""bench.measure.env: what env.json holds and the keys that decide comparability."""

from __future__ import annotations

import json
import socket

from bench.measure.env import capture_env, env_key, version


def test_env_key_names_the_host_device_and_versions() -> None:
    key = env_key("cpu")
    assert key["hostname"] == socket.gethostname()
    assert key["torch"] == version("torch") and key["lightning"] == version("lightning")
    assert key["device"]  # the CPU model on a CPU


def test_capture_env_is_json_with_versions_and_the_command() -> None:
    env = capture_env(["python", "-m", "bench.run"])
    assert json.loads(json.dumps(env)) == env
    assert env["command"] == ["python", "-m", "bench.run"]
    assert env["versions"]["torch"] == version("torch")
    assert env["cpu_cores_usable"] >= 1 and env["gpu_count"] == len(env["gpus"])
    assert version("not-a-distribution-here") is None
