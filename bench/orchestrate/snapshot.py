"""``bench.run --snapshot DIR``: a small, flat copy of the run, refreshed after every
cell, for a machine lent by the minute that may be taken back mid-run or may give
back only a few files: whatever finished is in DIR at any moment.

DIR holds four files, each replaced atomically (written beside, then renamed), so a
kill between two cells, or in the middle of a refresh, leaves the previous complete
set: ``run.tar.gz`` (the run folder: records, env, matrix, report, plots, cell logs;
no compile caches), and beside it ``records.jsonl``, ``env.json`` and ``report.md``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from bench.record import RunDir

TARBALL = "run.tar.gz"
BESIDE = ("records.jsonl", "env.json", "report.md")
# Inductor, Triton and DeepSpeed build caches: large, rebuilt by any rerun, no evidence.
CACHE_PREFIXES = ("inductor-", "triton", "torch_extensions")


def is_cache(path: Path) -> bool:
    return any(part.startswith(CACHE_PREFIXES) for part in path.parts)


def refresh(run_dir: RunDir, dest: Path) -> None:
    """Replace DIR's files with the run folder as it is now."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in BESIDE:
        source = run_dir.path / name
        if source.exists():
            partial = dest / f".{name}.partial"
            shutil.copyfile(source, partial)
            os.replace(partial, dest / name)
    partial = dest / f".{TARBALL}.partial"
    root = run_dir.path.name
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(run_dir.path.rglob("*")):
            relative = path.relative_to(run_dir.path)
            if path.is_file() and not path.is_symlink() and not is_cache(relative):
                tar.add(path, arcname=str(Path(root) / relative), recursive=False)
    os.replace(partial, dest / TARBALL)
