"""Evaluation shards: every rank runs the same number of batches (a rank with no
batch would skip the collectives of sync_dist and the metrics and hang the
others), and the ranks together see every image exactly once."""

from __future__ import annotations

import pytest
import torch

from mnist_core.data import VAL_SIZE, ShuffledBatches


def shards(n: int, batch_size: int, world_size: int) -> list[list[torch.Tensor]]:
    images = torch.arange(n, dtype=torch.float32).view(n, 1)
    labels = torch.arange(n)
    return [[labels for _, labels in ShuffledBatches(images, labels, batch_size, shuffle=False,
                                                      drop_last=False, rank=rank,
                                                      world_size=world_size)]
            for rank in range(world_size)]


@pytest.mark.parametrize("world_size", range(1, 9))
@pytest.mark.parametrize("batch_size", [1000, 999, 64, 7])
def test_every_rank_runs_the_same_batches_and_every_image_counts_once(
        world_size: int, batch_size: int) -> None:
    per_rank = shards(VAL_SIZE, batch_size, world_size)
    counts = {len(batches) for batches in per_rank}
    assert len(counts) == 1, f"batch counts differ across ranks: {counts}"
    assert all(len(batch) > 0 for batches in per_rank for batch in batches)
    assert all(len(batch) <= batch_size for batches in per_rank for batch in batches)
    seen = torch.cat([batch for batches in per_rank for batch in batches])
    assert sorted(seen.tolist()) == list(range(VAL_SIZE))
    loader = ShuffledBatches(torch.zeros(VAL_SIZE, 1), torch.zeros(VAL_SIZE), batch_size,
                             shuffle=False, drop_last=False, rank=0, world_size=world_size)
    assert len(loader) == counts.pop()


def test_the_case_that_used_to_leave_ranks_without_a_batch() -> None:
    """5000 images, 8 ranks, batches of 1000: ranks 5-7 used to get nothing."""
    per_rank = shards(VAL_SIZE, 1000, 8)
    assert [len(batches) for batches in per_rank] == [1] * 8
    assert [len(batches[0]) for batches in per_rank] == [625] * 8
