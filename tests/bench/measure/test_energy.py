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


def test_the_meter_counts_the_window_and_leaves_out_its_pauses() -> None:
    readings = iter([100.0, 112.5, 130.0, 131.0, 150.0])
    meter = EnergyMeter(lambda: next(readings), "nvml")
    meter.pause()  # before the window opens (a warm-up validation): nothing
    meter.start()  # 100
    meter.pause()  # 112.5: 12.5 J of training
    meter.resume()  # 130: validation's 17.5 J left out
    meter.close()  # 131: 1 J more
    meter.resume()  # closed: the clock's last resume does not reopen it
    assert meter.result() == {"joules": 13.5, "source": "nvml"}
    silent = EnergyMeter(None, None, "pynvml is not installed")
    silent.start()
    silent.close()
    assert silent.result() == {"joules": None, "source": None, "shared": False,
                               "reason": "pynvml is not installed"}


def test_the_clock_reads_energy_from_the_window_opening_to_its_closing_pause() -> None:
    from bench.measure.clock import StepClock
    from bench.measure.warmup import WarmupRule

    counter = {"joules": 0.0}

    def burn(joules: float) -> None:
        counter["joules"] += joules

    meter = EnergyMeter(lambda: counter["joules"], "rapl")
    clock = StepClock(WarmupRule.for_cell(2, "fixed", "throughput"), torch.device("cpu"),
                      agree=lambda flag: flag, energy=meter)
    clock.start()
    for step in range(5):  # 2 warm-up steps, then a window of 3
        clock.mark("forward")
        burn(10.0 if step < 2 else 1.0)
        clock.step_done(None, 8)
    clock.pause()  # validation inside fit: the window closed at the step before
    burn(50.0)
    clock.finish()
    burn(7.0)
    raw = clock.rank_raw(0)
    assert raw.energy == {"joules": 3.0, "source": "rapl"}
    assert len(raw.step_s) == 3


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
