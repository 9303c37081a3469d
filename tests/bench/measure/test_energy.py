"""bench.measure.energy: the window's energy from the hardware's own counters, and
its metrics; absent, with the reason, where no counter can be read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.measure.derive import derive_metrics
from bench.measure.energy import EnergyMeter, nvml_counter, rapl_counter
from bench.record import RankRaw, Raw


def package(root: Path, name: str, energy_uj: int, range_uj: int = 1_000_000_000) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return path


def test_rapl_sums_the_packages_and_undoes_a_wrap(tmp_path: Path) -> None:
    first = package(tmp_path, "intel-rapl:0", 999_000_000)
    second = package(tmp_path, "intel-rapl:1", 5_000_000)
    package(tmp_path, "intel-rapl:0:0", 1)  # a sub-domain (core): inside package 0 already
    read, reason = rapl_counter(tmp_path)
    assert read is not None and reason is None
    assert read() == 0.0
    (first / "energy_uj").write_text("3000000\n")  # wrapped: 1 J to the range, then 3 J
    (second / "energy_uj").write_text("7500000\n")  # 2.5 J
    assert read() == pytest.approx(1.0 + 3.0 + 2.5)


def test_rapl_says_why_when_there_is_none(tmp_path: Path) -> None:
    read, reason = rapl_counter(tmp_path)
    assert read is None and reason == f"no RAPL package counters under {tmp_path}"
    (tmp_path / "intel-rapl:0").mkdir()  # present, but energy_uj is not readable
    read, reason = rapl_counter(tmp_path)
    assert read is None and reason is not None and reason.startswith("RAPL counters unreadable")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_nvml_the_reason_is_kept() -> None:
    read, reason = nvml_counter(torch.device("cuda", 0))
    assert read is None and reason is not None


def test_the_meter_reads_the_counter_where_the_window_opens_and_closes() -> None:
    counter = iter([100.0, 112.5])
    meter = EnergyMeter(lambda: next(counter), "nvml")
    meter.start()
    assert meter.result() == {"joules": 12.5, "source": "nvml"}
    silent = EnergyMeter(None, None, "pynvml is not installed")
    silent.start()
    assert silent.result() == {"joules": None, "source": None, "shared": False,
                               "reason": "pynvml is not installed"}


def test_a_cpu_rank_other_than_the_first_on_its_node_leaves_rapl_to_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    meter = EnergyMeter.for_device(torch.device("cpu"))
    assert meter.read is None and meter.shared


def rank(index: int, energy: dict | None, window_s: float = 2.0, samples: int = 400) -> RankRaw:
    return RankRaw(rank=index, step_s=[window_s / 4] * 4, data_wait_s=[0.0] * 4,
                   samples=samples, window_s=window_s, energy=energy)


def test_joules_per_sample_and_watts_over_the_slowest_window() -> None:
    raw = Raw(ranks=[rank(0, {"joules": 300.0, "source": "nvml"}),
                     rank(1, {"joules": 500.0, "source": "nvml"}, window_s=4.0)])
    metrics = derive_metrics(raw, world_size=2)
    assert metrics["energy_j"] == 800.0
    assert metrics["joules_per_sample"] == 1.0  # 800 J / 800 samples
    assert metrics["avg_watts"] == 200.0  # 800 J / 4 s, the slowest rank's window
    assert metrics["energy_source"] == "nvml"


def test_a_node_counted_once_and_a_rank_unread_is_no_figure() -> None:
    shared = {"joules": None, "source": None, "shared": True, "reason": "local rank 0 reads"}
    once = derive_metrics(Raw(ranks=[rank(0, {"joules": 40.0, "source": "rapl"}),
                                     rank(1, shared)]), world_size=2)
    assert once["energy_j"] == 40.0 and once["joules_per_sample"] == 0.05
    refused = {"joules": None, "source": None, "shared": False, "reason": "refused"}
    partial = derive_metrics(Raw(ranks=[rank(0, {"joules": 40.0, "source": "nvml"}),
                                        rank(1, refused)]), world_size=2)
    assert partial["energy_j"] is None and partial["joules_per_sample"] is None
    unmeasured = derive_metrics(Raw(ranks=[rank(0, None)]), world_size=1)
    assert unmeasured["energy_j"] is None and unmeasured["avg_watts"] is None
