"""The shared workload: the tutorial's conv + attention MNIST classifier."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import nn

from mnist_core.choices import OPTIMIZER_IMPLS, OPTIMIZERS


class MnistNet(nn.Module):
    """conv(1->32) ReLU pool, conv(32->64) ReLU pool, 64 tokens of 49 dims through
    one-head self-attention, then a 3136 -> 6272 -> 3136 -> 10 MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.attention = nn.MultiheadAttention(embed_dim=49, num_heads=1, batch_first=True)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 49, 6272),
            nn.ReLU(),
            nn.Linear(6272, 3136),
            nn.ReLU(),
            nn.Linear(3136, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.features(images)  # (B, 64, 7, 7)
        tokens = maps.flatten(2)  # (B, 64, 49): one token per channel
        # The tutorial's call (need_weights left at its default), so the FLOPs
        # match the published model: 264.9 M per training sample.
        attended, _ = self.attention(tokens, tokens, tokens)
        return self.classifier(attended)


def build_optimizer(
    params: Any, name: str, lr: float, impl: str = "default"
) -> torch.optim.Optimizer:
    """The cell's optimizer. ``impl`` picks torch's kernel family; "default" leaves
    torch to choose, which is what the tutorial does."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if impl not in OPTIMIZER_IMPLS:
        raise ValueError(
            f"unknown optimizer implementation {impl!r}; valid: {', '.join(OPTIMIZER_IMPLS)}"
        )
    kernel: dict[str, bool] = {}
    if impl == "foreach":
        kernel = {"foreach": True}
    elif impl == "fused":
        kernel = {"fused": True}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **kernel)
    return torch.optim.SGD(params, lr=lr, **kernel)


def optimizer_kernel(optimizer: torch.optim.Optimizer | None) -> str | None:
    """Which kernel family an optimizer was asked for: "fused", "foreach", or
    "default" (torch's own choice, foreach on CUDA, for-loop on CPU)."""
    if optimizer is None:
        return None
    defaults = getattr(optimizer, "defaults", {})
    if defaults.get("fused"):
        return "fused"
    if defaults.get("foreach"):
        return "foreach"
    return "default"


class MnistModel(L.LightningModule):
    """The tutorial's LightningModule around :class:`MnistNet`."""

    def __init__(
        self,
        lr: float = 1e-3,
        optimizer: str = "adam",
        optimizer_impl: str = "default",
        use_scheduler: bool = False,
        scheduler_gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = MnistNet()
        self.loss_fn = nn.CrossEntropyLoss()
        self.val_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        self.test_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        # Sample-weighted means, synced as sums: the exact loss over every rank's images.
        self.val_mean_loss = torchmetrics.MeanMetric()
        self.test_mean_loss = torchmetrics.MeanMetric()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        images, labels = batch
        loss = self.loss_fn(self(images), labels)
        # Per-step value for curves; not synced (that would add a collective to
        # every step). Lightning logs it every `log_every_n_steps`.
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], accuracy: torchmetrics.Metric,
        mean_loss: torchmetrics.Metric, prefix: str,
    ) -> None:
        images, labels = batch
        logits = self(images)
        accuracy(logits, labels)
        mean_loss(self.loss_fn(logits.float(), labels), weight=len(labels))
        # Epoch-level values over every rank's images (torchmetrics syncs the sums).
        self.log(f"{prefix}_loss", mean_loss, on_step=False, on_epoch=True)
        self.log(f"{prefix}_acc", accuracy, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_accuracy, self.val_mean_loss, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_accuracy, self.test_mean_loss, "test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = build_optimizer(self.parameters(), hp.optimizer, hp.lr, hp.optimizer_impl)
        if not hp.use_scheduler:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=1, gamma=hp.scheduler_gamma
        )
        return [optimizer], [scheduler]
