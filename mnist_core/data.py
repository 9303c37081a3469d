"""MNIST as a LightningDataModule, with the loader modes the matrix compares.

Loader modes:
  torchvision  the tutorial's per-sample transforms through a DataLoader
  tensor       pre-normalised tensors in host memory, one indexing op per batch
  device       the whole split resident on the accelerator, shuffled there
  synthetic    random data of MNIST's shapes: throughput only, never accuracy
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.datasets import MNIST

from mnist_core.choices import LOADERS
from mnist_core.files import (
    MnistDataError,
    check_raw_files,
    has_raw_files,
    missing_data_message,
    raw_dir,
    resolve_data_dir,
)

MEAN, STD = 0.5, 0.5
TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 55_000, 5_000, 10_000
SPLIT_SEED = 42  # the train/val split is the same on every rank and every run

# MNIST's tensors by (resolved data directory, train), read once by a process that
# forks cells (bench.execute.preload): normalised float32 images (N, 1, 28, 28) and
# int64 labels. A forked cell's copy is its own (copy-on-write pages), so no cell can
# change what another reads.
PRELOADED: dict[tuple[Path, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def preload_tensors(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Check the files (sizes, MD5s), read both splits and normalise them into
    ``PRELOADED``: the tensors ``split_tensors`` would make, with numpy throughout,
    because a process that forks must not run a parallel torch kernel (OpenMP's
    threads do not survive the fork). False when the files are not there (the cell
    then finds out and says so itself); MnistDataError when one is damaged."""
    root = resolve_data_dir(data_dir)
    if not has_raw_files(root):
        return False
    check_raw_files(root)
    for train, prefix in ((True, "train"), (False, "t10k")):
        images = np.fromfile(raw_dir(root) / f"{prefix}-images-idx3-ubyte", np.uint8, offset=16)
        labels = np.fromfile(raw_dir(root) / f"{prefix}-labels-idx1-ubyte", np.uint8, offset=8)
        PRELOADED[(root, train)] = (normalise(images.reshape(-1, 28, 28)),
                                    torch.from_numpy(labels.astype(np.int64)))
    return True


def split_tensors(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (N, 1, 28, 28) and int64 labels of a split: preloaded (checked
    when they were read), else read now."""
    preloaded = PRELOADED.get((data_dir, train))
    if preloaded is not None:
        return preloaded
    raw = MNIST(data_dir, train=train)
    return normalise(raw.data.numpy()), raw.targets


def is_preloaded(data_dir: Path) -> bool:
    return (data_dir, True) in PRELOADED and (data_dir, False) in PRELOADED


def normalise(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), the same float32 arithmetic, step by
    step, as ToTensor (/255) then Normalize((0.5,), (0.5,)), so that every loader sees
    equal tensors, bit for bit. In numpy: the preload server uses it (see above)."""
    scaled = images_uint8[:, None].astype(np.float32) / np.float32(255)
    return torch.from_numpy((scaled - np.float32(MEAN)) / np.float32(STD))


def split_indices(generator_seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """The seeded 55000/5000 train/val split of MNIST's 60000 training images."""
    order = torch.randperm(TRAIN_SIZE + VAL_SIZE, generator=torch.Generator().manual_seed(
        generator_seed)).tolist()
    return order[:TRAIN_SIZE], order[TRAIN_SIZE:]


class ShuffledBatches:
    """Whole batches cut from tensors with one indexing op each.

    Training (``drop_last``): every rank draws the same seeded permutation per
    epoch; global batch ``k`` is ``perm[k*B*W:(k+1)*B*W]`` and rank ``r`` takes its
    ``r``-th slice of ``B``. So W ranks with batch B see exactly the samples one
    process with batch ``W*B`` sees. The permutation is drawn on the tensors' device.

    Evaluation (no ``drop_last``): rank ``r`` takes the ``r``-th of W contiguous,
    near-equal shards, cut into the same number of batches on every rank (at most
    B each). Every sample counts exactly once, and no rank runs out of batches
    while the others still enter the collectives of a synced metric.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        if self.drop_last:
            return n // (self.batch_size * self.world_size)
        largest_shard = -(-n // self.world_size)
        return -(-largest_shard // self.batch_size)

    def _order(self) -> torch.Tensor:
        n, device = len(self.labels), self.labels.device
        if not self.shuffle:
            return torch.arange(n, device=device)
        generator = torch.Generator(device=device).manual_seed(self.seed + self.epoch)
        return torch.randperm(n, generator=generator, device=device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        self.epoch += 1
        if self.drop_last:
            global_batch = self.batch_size * self.world_size
            for k in range(len(self)):
                start = k * global_batch + self.rank * self.batch_size
                idx = order[start : start + self.batch_size]
                yield self.images[idx], self.labels[idx]
            return
        shard = torch.tensor_split(order, self.world_size)[self.rank]
        for idx in torch.tensor_split(shard, len(self)):
            yield self.images[idx], self.labels[idx]


class MnistDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        loader: str = "torchvision",
        num_workers: int = 0,
        eval_batch_size: int = 1000,
        seed: int = 0,
        val_images: int = VAL_SIZE,
    ) -> None:
        """``val_images``: validate on the first this many images of the seeded
        validation split (all 5000 by default). A prefix of a fixed permutation, so a
        smaller set is the same images for every run and every rank count."""
        super().__init__()
        if loader not in LOADERS:
            raise ValueError(f"unknown loader {loader!r}; valid: {', '.join(LOADERS)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 < val_images <= VAL_SIZE:
            raise ValueError(f"val_images must be in 1..{VAL_SIZE}, got {val_images}")
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size, self.loader, self.num_workers = batch_size, loader, num_workers
        self.eval_batch_size, self.seed, self.val_images = eval_batch_size, seed, val_images
        self.train_set: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None
        self.val_set: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None
        self.test_set: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None
        self.device = torch.device("cpu")
        self.rank, self.world_size = 0, 1

    # -- Lightning hooks -------------------------------------------------
    def prepare_data(self) -> None:
        """Download only when the files are missing; then check them."""
        if self.loader == "synthetic":
            return
        if is_preloaded(self.data_dir):  # checked by the process that read them
            return
        if not has_raw_files(self.data_dir):
            try:
                MNIST(self.data_dir, train=True, download=True)
                MNIST(self.data_dir, train=False, download=True)
            except Exception as error:  # no network, read-only directory, ...
                raise MnistDataError(
                    missing_data_message(self.data_dir, f"{type(error).__name__}: {error}")
                ) from error
        check_raw_files(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
            if self.loader == "device":
                self.device = self.trainer.strategy.root_device
        if self.loader == "synthetic":
            self._setup_synthetic()
            return
        if stage in ("fit", "validate", None) and self.train_set is None:
            if self.loader == "torchvision":
                full = MNIST(self.data_dir, train=True, transform=self._transform())
                train_idx, val_idx = split_indices()
                self.train_set = Subset(full, train_idx)
                self.val_set = Subset(full, val_idx[:self.val_images])
            else:
                images, labels = self._tensors(train=True)
                train_idx, val_idx = (torch.tensor(i) for i in split_indices())
                val_idx = val_idx[:self.val_images]
                self.train_set = (images[train_idx], labels[train_idx])
                self.val_set = (images[val_idx], labels[val_idx])
        if stage in ("test", "predict", None) and self.test_set is None:
            if self.loader == "torchvision":
                self.test_set = MNIST(self.data_dir, train=False, transform=self._transform())
            else:
                self.test_set = self._tensors(train=False)

    def train_dataloader(self) -> DataLoader | ShuffledBatches:
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | ShuffledBatches:
        return self._loader(self.val_set, self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader | ShuffledBatches:
        return self._loader(self.test_set, self.eval_batch_size, train=False)

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def _transform() -> transforms.Compose:
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def _tensors(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = split_tensors(self.data_dir, train)
        return images.to(self.device), labels.to(self.device)

    def _setup_synthetic(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)

        def fake(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.randn(n, 1, 28, 28, generator=generator)
            labels = torch.randint(0, 10, (n,), generator=generator)
            return images.to(self.device), labels.to(self.device)

        # Drawn whole, then cut: the test set's draws do not depend on val_images.
        self.train_set = fake(TRAIN_SIZE)
        images, labels = fake(VAL_SIZE)
        self.val_set = (images[:self.val_images], labels[:self.val_images])
        self.test_set = fake(TEST_SIZE)

    def _loader(
        self, data: Dataset | tuple[torch.Tensor, torch.Tensor] | None, batch_size: int,
        train: bool,
    ) -> DataLoader | ShuffledBatches:
        if data is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        if isinstance(data, tuple):
            images, labels = data
            return ShuffledBatches(
                images, labels, batch_size, shuffle=train, drop_last=train, seed=self.seed,
                rank=self.rank, world_size=self.world_size,
            )
        # Lightning swaps in a DistributedSampler under DDP (same seed on every rank).
        workers = self.num_workers
        return DataLoader(
            data, batch_size=batch_size, shuffle=train, drop_last=train,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )
