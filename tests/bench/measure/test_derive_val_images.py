"""val_images: which validation a record ran, stored beside val_acc and read back."""

from __future__ import annotations

from bench.measure.derive import derive_metrics
from bench.metrics import BY_NAME, SANITY_VAL_IMAGES, STORED_NAMES
from bench.record import Raw


def test_val_images_is_a_declared_stored_metric_passed_through() -> None:
    assert "val_images" in STORED_NAMES and BY_NAME["val_images"].unit == "images"
    assert str(SANITY_VAL_IMAGES) in BY_NAME["val_images"].derivation
    raw = Raw(val_acc=0.8, val_loss=0.6, val_images=SANITY_VAL_IMAGES)
    assert derive_metrics(raw, 1)["val_images"] == SANITY_VAL_IMAGES


def test_a_raw_block_round_trips_it_and_an_older_one_lacks_it() -> None:
    raw = Raw(val_acc=0.8, val_images=SANITY_VAL_IMAGES)
    assert Raw.from_dict(raw.to_dict()).val_images == SANITY_VAL_IMAGES
    older = Raw.from_dict({"ranks": [], "val_acc": 0.8})  # written before the field
    assert older.val_images is None and "val_images" not in Raw().to_dict()
    assert derive_metrics(older, 1)["val_images"] is None
