"""``MnistDataModule(val_images=N)``: the first N images of the seeded validation
split, the same images for every loader, and shards that add up to exactly them on
every rank count (ShuffledBatches; DistributedSampler for the torchvision loader)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from mnist_core.data import VAL_SIZE, MnistDataModule, ShuffledBatches

SUBSET = 480  # bench.metrics.SANITY_VAL_IMAGES (mnist_core does not import bench)


def module(data_dir: Path, loader: str, val_images: int = VAL_SIZE) -> MnistDataModule:
    dm = MnistDataModule(data_dir, batch_size=32, loader=loader, val_images=val_images)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def labels_of(dm: MnistDataModule) -> torch.Tensor:
    if isinstance(dm.val_set, tuple):
        return dm.val_set[1]
    full, indices = dm.val_set.dataset, dm.val_set.indices  # a Subset of MNIST
    return full.targets[torch.tensor(indices)]


def test_the_subset_is_the_first_images_of_the_whole_split(data_dir: Path) -> None:
    whole = module(data_dir, "tensor")
    subset = module(data_dir, "tensor", SUBSET)
    assert subset.val_images == SUBSET and whole.val_images == VAL_SIZE
    assert torch.equal(subset.val_set[0], whole.val_set[0][:SUBSET])
    assert torch.equal(subset.val_set[1], whole.val_set[1][:SUBSET])
    # the torchvision loader holds the same images (as indices into MNIST)
    assert torch.equal(labels_of(module(data_dir, "torchvision", SUBSET)), subset.val_set[1])
    # every class is there: the split is a seeded permutation, its head a fair sample
    assert torch.bincount(subset.val_set[1], minlength=10).min() >= SUBSET // 20
    # the training split does not shrink with it
    assert len(subset.train_set[1]) == len(whole.train_set[1])


def test_synthetic_subset_leaves_the_test_set_alone(data_dir: Path) -> None:
    whole, subset = module(data_dir, "synthetic"), module(data_dir, "synthetic", SUBSET)
    assert len(subset.val_set[1]) == SUBSET
    assert torch.equal(subset.val_set[0], whole.val_set[0][:SUBSET])
    assert torch.equal(subset.test_set[0], whole.test_set[0])


@pytest.mark.parametrize("val_images", [0, -1, VAL_SIZE + 1])
def test_a_size_outside_the_split_is_refused(val_images: int) -> None:
    with pytest.raises(ValueError, match="val_images must be in 1..5000"):
        MnistDataModule(loader="synthetic", val_images=val_images)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5, 6, 7, 8, 16])
def test_rank_shards_of_the_subset_add_up_to_it(world_size: int) -> None:
    """The tensor and device loaders: every rank the same number of batches, every
    image once (the eval loader's batch is 1000, so one batch per rank)."""
    labels = torch.arange(SUBSET)
    seen, counts = [], set()
    for rank in range(world_size):
        loader = ShuffledBatches(torch.zeros(SUBSET, 1), labels, 1000, shuffle=False,
                                 drop_last=False, rank=rank, world_size=world_size)
        batches = [batch for _, batch in loader]
        counts.add(len(batches))
        seen += [int(i) for batch in batches for i in batch]
    assert len(counts) == 1 and sorted(seen) == list(range(SUBSET))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 32, 48])
def test_lightnings_sampler_pads_no_rank_of_the_subset(world_size: int) -> None:
    """The torchvision loader under Lightning's DDP gets a DistributedSampler, which
    repeats images to even out the ranks when the count does not divide; the subset's
    size divides by these rank counts, so each image counts once."""
    shares = [list(DistributedSampler(range(SUBSET), world_size, rank, shuffle=False))
              for rank in range(world_size)]
    assert sorted(i for share in shares for i in share) == list(range(SUBSET))
