from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mnist_core.data import MnistDataError, MnistDataModule, ShuffledBatches, resolve_data_dir
from mnist_core.files import RAW_FILES


@pytest.fixture(scope="module")
def fitted(data_dir: Path) -> dict[str, MnistDataModule]:
    modules = {}
    for loader in ("torchvision", "tensor"):
        dm = MnistDataModule(data_dir, batch_size=32, loader=loader)
        dm.prepare_data()
        dm.setup(None)
        modules[loader] = dm
    return modules


def test_split_sizes(fitted: dict[str, MnistDataModule]) -> None:
    for dm in fitted.values():
        assert len(dm.train_set[1] if isinstance(dm.train_set, tuple) else dm.train_set) == 55_000
        assert len(dm.val_set[1] if isinstance(dm.val_set, tuple) else dm.val_set) == 5_000
        assert len(dm.test_set[1] if isinstance(dm.test_set, tuple) else dm.test_set) == 10_000


def test_split_is_the_same_for_two_instances(data_dir: Path) -> None:
    first, second = (MnistDataModule(data_dir, loader="torchvision") for _ in range(2))
    for dm in (first, second):
        dm.setup("fit")
    assert first.train_set.indices == second.train_set.indices
    assert first.val_set.indices == second.val_set.indices
    assert not set(first.train_set.indices) & set(first.val_set.indices)


def test_loader_modes_give_identical_normalised_tensors(
        fitted: dict[str, MnistDataModule]) -> None:
    tv, tensor = fitted["torchvision"], fitted["tensor"]
    images, labels = tensor.val_set
    for position in (0, 1, 4_999):
        image, label = tv.val_set[position]
        assert torch.equal(image, images[position])
        assert label == int(labels[position])
    assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28)
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0


def test_torchvision_and_tensor_loaders_yield_equal_batches(
        fitted: dict[str, MnistDataModule]) -> None:
    a = next(iter(fitted["torchvision"].test_dataloader()))
    b = next(iter(fitted["tensor"].test_dataloader()))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_shuffled_batches_shard_global_batches_by_rank() -> None:
    images, labels = torch.arange(20).float(), torch.arange(20)
    single = list(ShuffledBatches(images, labels, 4, shuffle=True, drop_last=True, seed=3))
    ranks = [list(ShuffledBatches(images, labels, 2, shuffle=True, drop_last=True, seed=3,
                                  rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for k, (x, _) in enumerate(single):
        assert torch.equal(x, torch.cat([ranks[0][k][0], ranks[1][k][0]]))


def test_missing_data_names_the_directory_and_both_fixes(tmp_path: Path) -> None:
    # A directory that cannot be created makes the download fail with or without network.
    (tmp_path / "a-file").write_text("")
    nowhere = tmp_path / "a-file" / "data"
    with pytest.raises(MnistDataError) as error:
        MnistDataModule(nowhere, loader="tensor").prepare_data()
    message = str(error.value)
    assert str(nowhere) in message
    assert "--data-dir" in message and "MNIST_DATA_DIR" in message
    assert "network" in message


def _copy_raw(data_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "MNIST" / "raw"
    target.mkdir(parents=True)
    for name in RAW_FILES:
        shutil.copy(data_dir / "MNIST" / "raw" / name, target / name)
    return target


def test_truncated_file_is_named(data_dir: Path, tmp_path: Path) -> None:
    raw = _copy_raw(data_dir, tmp_path)
    victim = raw / "t10k-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(MnistDataError, match="t10k-labels-idx1-ubyte is truncated"):
        MnistDataModule(tmp_path).prepare_data()


def test_corrupt_file_is_named(data_dir: Path, tmp_path: Path) -> None:
    raw = _copy_raw(data_dir, tmp_path)
    victim = raw / "train-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(MnistDataError, match="train-labels-idx1-ubyte is corrupt"):
        MnistDataModule(tmp_path).prepare_data()


def test_data_dir_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("MNIST_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == tmp_path / "data"


def test_bad_loader_and_batch_size_are_refused() -> None:
    with pytest.raises(ValueError, match="valid: torchvision, tensor, device, synthetic"):
        MnistDataModule(loader="fast")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        MnistDataModule(batch_size=0)


def test_preloaded_tensors_are_torchvisions_and_are_used(data_dir: Path,
                                                         tmp_path: Path) -> None:
    """What a preload server reads and normalises with numpy is exactly what torchvision's
    MNIST reads through ToTensor and Normalize (values, dtype, shape), and a datamodule
    set up afterwards takes it from there, without checking the files again."""
    from torchvision import transforms
    from torchvision.datasets import MNIST

    from mnist_core import data

    assert data.preload_tensors(tmp_path) is False  # no files: nothing preloaded
    try:
        assert data.preload_tensors(data_dir) is True
        root = resolve_data_dir(data_dir)
        assert sorted(train for _, train in data.PRELOADED) == [False, True]
        to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,),
                                                                                    (0.5,))])
        for train, count in ((True, 60_000), (False, 10_000)):
            images, labels = data.PRELOADED[(root, train)]
            reference = MNIST(data_dir, train=train, transform=to_tensor)
            assert images.dtype == torch.float32 and labels.dtype == torch.int64
            assert images.shape == (count, 1, 28, 28) and labels.shape == (count,)
            for position in (0, 7, count - 1):
                image, label = reference[position]
                assert torch.equal(images[position], image) and labels[position] == label
            assert torch.equal(labels, reference.targets)
            assert data.split_tensors(root, train)[0] is images
        dm = MnistDataModule(data_dir, loader="tensor")
        dm.prepare_data()  # nothing to check: the preload checked what it read
        dm.setup("test")
        assert dm.test_set[0] is data.PRELOADED[(root, False)][0]  # no second read
        assert dm.test_set[1] is data.PRELOADED[(root, False)][1]
    finally:
        data.PRELOADED.clear()  # the other tests read the files themselves
