"""Starting the other ranks of a cell of several processes on this machine.

Rank 0 is the cell's process. First thing, before anything else, it starts ranks
1..N-1 with what torchrun would give them in the environment (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), for every cell of several
ranks that no launcher started: Lightning then finds its processes created outside
and starts none (its LightningEnvironment), and the hand-written engines join the
group in bench.execute.launch. How the ranks are made:

- in a cell forked from the run's preload server (bench.execute.preload), they are
  forks of rank 0, made before it has run a thread or a kernel: they start with
  torch, Lightning and MNIST loaded, as rank 0 does, in a fraction of a second;
- otherwise they are new interpreters running rank 0's command line, started before
  torch is imported, so that the ranks import side by side (the imports take longer
  than many a cell's training) rather than one after the other, as Lightning's own
  launcher would start them from ``Trainer.fit``.

Either way they are in rank 0's session and process group, so the orchestrator's
kill of the group reaches every rank; and rank 0 watches them: when one fails, it
stops the others and itself (they would wait for it in a collective), as Lightning's
launcher does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

from bench.matrix import Cell

# Set by rank 0 for the ranks it starts, so that they know they are not rank 0.
RANK_VAR = "MNIST_BENCH_ENGINE_RANK"


class RankProcess(Protocol):
    """What rank 0 needs of another rank's process: subprocess.Popen, ForkedRank."""

    def poll(self) -> int | None: ...
    def kill(self) -> None: ...
    def wait(self) -> int: ...


_started: list[RankProcess] = []


def needs_own_ranks(cell: Cell) -> bool:
    """A cell of several ranks, not under a launcher that made them already."""
    launched = "TORCHELASTIC_RUN_ID" in os.environ or "SLURM_PROCID" in os.environ
    return cell.world_size > 1 and not launched


def start_other_ranks(cell: Cell, run_rank: Callable[[], int] | None = None
                      ) -> list[RankProcess]:
    """On rank 0 (once per process): start ranks 1..N-1 of ``cell`` and a thread that
    stops this process when one of them fails. With ``run_rank``, they are forks of
    this process, each of which calls ``run_rank()`` and exits with its status; without,
    new interpreters on this process's command line. Returns the started ranks; on the
    other ranks, nothing."""
    if _started or RANK_VAR in os.environ:
        return list(_started)
    world = cell.world_size
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                      **_rank_environment(0, world))
    for rank in range(1, world):
        if run_rank is not None:
            _started.append(_fork_rank(rank, world, run_rank))
        else:
            _started.append(_start_rank(rank, world))
    _watch(_started)
    return list(_started)


def _rank_environment(rank: int, world: int) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "NODE_RANK": "0"}


def _start_rank(rank: int, world: int) -> subprocess.Popen[bytes]:
    env = os.environ | {RANK_VAR: str(rank)} | _rank_environment(rank, world)
    # The same command line (one cell), in the same process group as rank 0, so that
    # the orchestrator's kill of the group reaches every rank.
    return subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env,
                            stdin=subprocess.DEVNULL)


class ForkedRank:
    """A rank forked from rank 0, with the part of ``subprocess.Popen`` rank 0 uses.
    Safe to poll from the watching thread while the main thread waits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self) -> int:
        while (code := self.poll()) is None:
            time.sleep(0.02)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _fork_rank(rank: int, world: int, run_rank: Callable[[], int]) -> ForkedRank:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedRank(pid)
    # The child: rank ``rank``, which never returns from here.
    status = 1
    try:
        _started.clear()  # rank 0's list, copied by the fork
        os.environ.update({RANK_VAR: str(rank)} | _rank_environment(rank, world))
        _tell_lightning_the_rank(rank)
        status = run_rank()
    except SystemExit as leaving:
        status = leaving.code if isinstance(leaving.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # No interpreter teardown: rank 0's atexit work (its wandb run, its files) is
        # not this process's to do.
        os._exit(status)


def _tell_lightning_the_rank(rank: int) -> None:
    """Lightning reads the rank from the environment when it is imported, which in a
    fork happened in rank 0's ancestor, as rank 0; its Trainer sets it again later,
    but a fault or a log line before then must see this rank's number."""
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        rank_zero_only.rank = rank  # type: ignore[attr-defined]


def _watch(children: list[RankProcess]) -> None:
    """When a started rank fails, stop rank 0 too (it would wait in a collective for
    the group's timeout), as Lightning's launcher does; the failed rank has left its
    failure note, which the orchestrator reports."""
    def watch() -> None:
        while True:
            codes = [child.poll() for child in children]
            if any(code not in (None, 0) for code in codes):
                for child in children:
                    if child.poll() is None:
                        child.kill()
                os.kill(os.getpid(), signal.SIGKILL)
            if all(code == 0 for code in codes):
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True, name="rank-watch").start()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
