"""The job script (scripts/slurm/mnist-bench.sbatch, its CPU form) on a real two-node
SLURM cluster: scripts/slurm/local-cluster.sh's slurmctld and two slurmd on this
machine, started once for the module. sbatch trains as torchrun does; a scancel in the
middle of a cell is recorded and --resume finishes the run; a requeued job resumes its
own run directory. Where slurm-wlm and munge cannot be installed, these tests skip."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from tests.e2e.launches import REPO, TWO_NODE_ARGS, TWO_NODE_CELL, check_records, launch_env

CLUSTER_SCRIPT = REPO / "scripts" / "slurm" / "local-cluster.sh"
JOB_SCRIPT = REPO / "scripts" / "slurm" / "mnist-bench.sbatch"
CANNOT_INSTALL = 3  # local-cluster.sh: slurm-wlm and munge missing, not installable here
REQUIRE_SLURM = "MNIST_BENCH_REQUIRE_SLURM"  # set by .ci/run once the packages are in
CPU_FORM = ["--ntasks-per-node=1", "--gpus-per-node=0"]
# Two cells that train, the second slowed down: a signal sent once its training has
# begun lands in the middle of it.
SECOND_CELL = "cpu-1x-2n-ddp-32-true-bs8-tensor"
TWO_CELLS = list(TWO_NODE_ARGS)
TWO_CELLS[TWO_CELLS.index("--precisions") + 1] = "32-true"
TWO_CELLS[TWO_CELLS.index("--batch-sizes") + 1] = "16,8"
SLOW_SECOND_CELL = f"{SECOND_CELL}=slow-data:1000"
# Lightning prints it on each rank as a cell's training begins: the third is cell 2's.
FIT_BEGINS = "SLURM auto-requeueing enabled"
JOB_TIMEOUT_S = 300
ENDED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (slurmctld, then its two nodes)."""
    for base in range(17100, 18000, 10):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the SLURM cluster")


@dataclass
class Cluster:
    root: Path
    own: dict[str, str]  # the variables that name this cluster (its folder, ports, conf)

    @property
    def env(self) -> dict[str, str]:
        """For the cluster script and the SLURM commands."""
        return dict(os.environ) | self.own

    def command(self, *args: str) -> str:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout

    def submit(self, job_env: dict[str, str], log: Path, bench_args: list[str]) -> str:
        """sbatch the job script's CPU form from the repository root; the job's id."""
        done = subprocess.run(["sbatch", "--parsable", f"--output={log}", *CPU_FORM,
                               str(JOB_SCRIPT), *bench_args],
                              cwd=REPO, env=job_env | self.own, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def run_job(self, job_env: dict[str, str], log: Path, bench_args: list[str]) -> str:
        """Submit and wait for the job to end (polled here: `sbatch --wait` polls ever
        more slowly); the job's id."""
        job_id = self.submit(job_env, log, bench_args)
        state = self.wait_until_ended(job_id)
        assert state == "COMPLETED", f"job {job_id}: {state}\n{log.read_text()[-5000:]}"
        return job_id

    def wait_until_ended(self, job_id: str) -> str:
        wait_for(f"job {job_id} to end", lambda: self.job(job_id)["JobState"] in ENDED)
        return self.job(job_id)["JobState"]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job`'s fields (JobState, Restarts, ...)."""
        line = self.command("scontrol", "show", "job", "-o", job_id)
        return dict(item.split("=", 1) for item in line.split() if "=" in item)


def wait_for(what: str, done: Callable[[], bool], timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.3)


def records(run_dir: Path, name: str = "records.jsonl") -> list[dict[str, Any]]:
    path = run_dir / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("slurm")
    cluster = Cluster(root, {"MNIST_BENCH_SLURM_DIR": str(root),
                             "MNIST_BENCH_SLURM_PORT": str(free_ports(3)),
                             "SLURM_CONF": str(root / "etc" / "slurm.conf")})
    started = subprocess.run([str(CLUSTER_SCRIPT), "start"], env=cluster.env,
                             capture_output=True, text=True, timeout=300)
    if started.returncode == CANNOT_INSTALL:
        why = f"no SLURM cluster here: {started.stderr.strip()}"
        if os.environ.get(REQUIRE_SLURM) == "1":  # CI installed the packages: no skip
            pytest.fail(f"{why} ({REQUIRE_SLURM}=1)")
        pytest.skip(why)
    try:
        assert started.returncode == 0, started.stderr
        yield cluster
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "stop"], env=cluster.env, timeout=120)


@pytest.fixture
def job_env(data_dir: Path, tmp_path: Path) -> dict[str, str]:
    """What a job needs here: this interpreter, results under tmp_path, and the address
    of node 1 (the node names do not resolve; Lightning's SLURM environment takes it)."""
    return launch_env(data_dir) | {"PYTHON": sys.executable, "MASTER_ADDR": "127.0.0.1",
                                   "MNIST_BENCH_OUT": str(tmp_path / "out")}


def start_slowed(cluster: Cluster, job_env: dict[str, str], log: Path) -> tuple[str, Path]:
    """Submit TWO_CELLS with the second slowed; return once its training has begun."""
    job_id = cluster.submit(job_env | {ENV_VAR: SLOW_SECOND_CELL}, log, TWO_CELLS)

    def training_second() -> bool:
        return log.exists() and log.read_text().count(FIT_BEGINS) >= 3

    wait_for("the second cell's training",
             lambda: training_second() or cluster.job(job_id)["JobState"] in ENDED)
    assert training_second(), log.read_text()[-5000:]
    time.sleep(1)  # a step or two in
    return job_id, Path(job_env["MNIST_BENCH_OUT"]) / f"job-{job_id}"


@pytest.mark.slow
def test_sbatch_two_nodes_trains_as_torchrun(cluster: Cluster, job_env: dict[str, str],
                                             torchrun_two_nodes: dict[str, Any],
                                             tmp_path: Path) -> None:
    """2 nodes x 1 task: one ok record of world size 2 on 2 nodes, naming its job and
    nodes, whose every rank's losses are torchrun's (2 nodes x 1 rank on loopback) for
    the same cell, to 4 decimals."""
    log = tmp_path / "job.out"
    job_id = cluster.run_job(job_env, log, TWO_NODE_ARGS)
    run_dir = Path(job_env["MNIST_BENCH_OUT"]) / f"job-{job_id}"
    got = records(run_dir)
    check_records(got, [(TWO_NODE_CELL, "ok"), ("cpu-1x-2n-ddp-16-mixed-bs16-tensor", "skipped")],
                  num_nodes=2)
    assert got[0]["env_key"]["slurm"] == {"job_id": job_id, "node_list": "n[1-2]", "nodes": 2,
                                          "restart_count": 0}
    assert json.loads((run_dir / "env.json").read_text())["slurm"]["job_id"] == job_id
    assert f"job {job_id} (restart 0): new run {run_dir}" in log.read_text()
    [torchrun] = [r for r in records(next(torchrun_two_nodes["outs"][0].iterdir()))
                  if r["cell_id"] == TWO_NODE_CELL]
    assert got[0]["cell"] == torchrun["cell"]
    assert got[0]["effective"]["num_threads"] == torchrun["effective"]["num_threads"]

    def losses(record: dict[str, Any]) -> list[list[float]]:
        return [[round(loss, 4) for loss in rank["loss"]] for rank in record["raw"]["ranks"]]

    assert len(losses(got[0])[0]) == 4  # the warm-up step and the 3 measured
    assert losses(got[0]) == losses(torchrun)


@pytest.mark.slow
def test_scancel_mid_cell_is_recorded_and_resume_finishes(
        cluster: Cluster, job_env: dict[str, str], tmp_path: Path) -> None:
    """scancel while the second cell trains: the first cell's record stays as it was, the
    second is recorded interrupted; the job script with MNIST_BENCH_RUN_DIR resumes the
    run in a new job and finishes it."""
    job_id, run_dir = start_slowed(cluster, job_env, tmp_path / "job.out")
    cluster.command("scancel", job_id)
    assert cluster.wait_until_ended(job_id) == "CANCELLED"
    wait_for("the interrupted record", lambda: len(records(run_dir)) == 2, timeout=30)
    first, interrupted = records(run_dir)
    assert (first["cell_id"], first["status"]) == (TWO_NODE_CELL, "ok")
    assert (interrupted["cell_id"], interrupted["status"], interrupted["reason"]) == \
        (SECOND_CELL, "interrupted", "stopped by SIGTERM while running")

    resumed = cluster.run_job(job_env | {"MNIST_BENCH_RUN_DIR": str(run_dir)},
                              tmp_path / "resume.out", TWO_CELLS)
    kept, second = records(run_dir)
    assert kept == first
    assert (second["cell_id"], second["status"]) == (SECOND_CELL, "ok")
    assert second["env_key"]["slurm"]["job_id"] == resumed
    assert records(run_dir, "records.superseded.jsonl") == [interrupted]
    assert (run_dir / "report.md").is_file()


@pytest.mark.slow
def test_requeue_resumes_the_same_run(cluster: Cluster, job_env: dict[str, str],
                                      tmp_path: Path) -> None:
    """scontrol requeue while the second cell trains: the job runs again under its id,
    resumes its run directory, and the run ends with each cell ok exactly once."""
    log = tmp_path / "job.out"
    job_id, run_dir = start_slowed(cluster, job_env, log)
    cluster.command("scontrol", "requeue", job_id)
    wait_for("the requeued job to wait", lambda: cluster.job(job_id)["Restarts"] == "1"
             and cluster.job(job_id)["JobState"] == "PENDING", timeout=60)
    # SLURM holds a requeued batch job for about two minutes (its BeginTime): start it now.
    cluster.command("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    assert cluster.wait_until_ended(job_id) == "COMPLETED", log.read_text()[-5000:]
    final = records(run_dir)
    assert [(r["cell_id"], r["status"]) for r in final] == [(TWO_NODE_CELL, "ok"),
                                                            (SECOND_CELL, "ok")]
    assert [r["env_key"]["slurm"]["job_id"] for r in final] == [job_id, job_id]
    assert [r["env_key"]["slurm"]["restart_count"] for r in final] == [0, 1]
    # What the first attempt left of the second cell, if anything: not ok, set aside.
    assert [(r["cell_id"], r["status"], r["env_key"]["slurm"]["restart_count"])
            for r in records(run_dir, "records.superseded.jsonl")] in (
        [], [(SECOND_CELL, "interrupted", 0)])
    output = log.read_text()
    assert f"job {job_id} (restart 0): new run {run_dir}" in output
    assert f"job {job_id} (restart 1): resuming {run_dir}" in output


def own_processes(cluster: Cluster) -> list[str]:
    """Every live process of the cluster's: a daemon (its command names the cluster's
    folder), a job step (working in it) or a job's task (SLURM_CONF names it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited; only its parent can reap it
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except (OSError, IndexError):
            continue
        if (str(cluster.root) in command or cwd.startswith(str(cluster.root))
                or f"SLURM_CONF={cluster.own['SLURM_CONF']}".encode() in environ):
            found.append(f"{proc.name}: {command}")
    return found


@pytest.mark.slow
def test_stop_leaves_nothing_running(cluster: Cluster) -> None:
    """Last in this module: `stop` ends every process the cluster started, its jobs too."""
    assert len(own_processes(cluster)) >= 4  # munged, slurmctld, two slurmd
    sleeper = cluster.command("sbatch", "--parsable", "--nodes=2", f"--output={os.devnull}",
                              "--wrap", "srun sleep 300").strip()
    wait_for("a job running on both nodes",
             lambda: cluster.job(sleeper)["JobState"] == "RUNNING", timeout=60)
    subprocess.run([str(CLUSTER_SCRIPT), "stop"], env=cluster.env, check=True, timeout=120)
    assert own_processes(cluster) == []
    status = subprocess.run([str(CLUSTER_SCRIPT), "status"], env=cluster.env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 1
    assert status.stdout.splitlines() == ["munged: stopped", "slurmctld: stopped",
                                          "slurmd-n1: stopped", "slurmd-n2: stopped"]
