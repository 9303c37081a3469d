"""MNIST's four original files: where they are, and whether they are whole. No torch,
no Lightning: the orchestrating process checks them before the first cell (bench.
orchestrate.preflight) in a fraction of a second, and mnist_core.data before it reads them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Name -> (bytes, published MD5 of the uncompressed original).
RAW_FILES = {
    "train-images-idx3-ubyte": (16 + 60_000 * 784, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (8 + 60_000, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (16 + 10_000 * 784, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (8 + 10_000, "27ae3e4e09519cfbb04c329615203637"),
}


class MnistDataError(RuntimeError):
    """MNIST is missing or damaged; the message says where and how to fix it."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir``, else ``$MNIST_DATA_DIR``, else ``./data``."""
    chosen = data_dir or os.environ.get("MNIST_DATA_DIR") or "data"
    return Path(chosen).expanduser().resolve()


def raw_dir(data_dir: Path) -> Path:
    return data_dir / "MNIST" / "raw"


def check_raw_files(data_dir: Path) -> None:
    """Raise :class:`MnistDataError` naming the first missing, truncated or corrupt file."""
    for name, (size, md5) in RAW_FILES.items():
        path = raw_dir(data_dir) / name
        if not path.is_file():
            raise MnistDataError(missing_data_message(data_dir, f"{path} does not exist"))
        actual = path.stat().st_size
        if actual != size:
            raise MnistDataError(
                f"MNIST file {path} is truncated or corrupt: {actual} bytes, expected {size}. "
                "Delete it and download again, or copy a good one there."
            )
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        if digest != md5:
            raise MnistDataError(
                f"MNIST file {path} is corrupt: MD5 {digest}, expected the published {md5}. "
                "Delete it and download again, or copy a good one there."
            )


def missing_data_message(data_dir: Path, detail: str) -> str:
    return (
        f"MNIST not found in {data_dir} ({detail}) and it could not be downloaded. "
        "Fix it in one of two ways: point --data-dir or MNIST_DATA_DIR at a directory "
        "holding MNIST/raw/ with the four original files, or run once with network "
        "access and a writable data directory so torchvision can download them."
    )


def has_raw_files(data_dir: Path) -> bool:
    return all((raw_dir(data_dir) / name).is_file() for name in RAW_FILES)
