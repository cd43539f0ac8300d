"""The training configuration: one frozen dataclass, built from flags by `train_job/main.py`."""

from __future__ import annotations

import dataclasses

from model.constants import DEFAULT_IMAGE_SIZE, MAGNIFICATIONS


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `train()` needs; defaults are the documented production settings."""

    data_dir: str
    output_dir: str
    magnifications: tuple[str, ...] = MAGNIFICATIONS
    image_size: int = DEFAULT_IMAGE_SIZE
    batch_size: int = 32  # per replica; the global batch is batch_size x replicas
    epochs: int = 10  # phase 1: head only, VGG16 base frozen
    fine_tune_epochs: int = 10  # phase 2: from `fine_tune_from` on, at a lower learning rate
    fine_tune_from: str = "block4"  # first VGG16 block to unfreeze, or "none" to skip phase 2
    learning_rate: float = 1e-3  # per replica of 32 images; scaled by the replica count
    fine_tune_learning_rate: float = 1e-5
    dense_units: int = 256
    dropout: float = 0.5
    weights: str = "imagenet"  # "imagenet", "none", or a VGG16 no-top weights file (local/gs://)
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    folds: int = 0  # 0: one train/validation/test split; K >= 2: K-fold by specimen
    fold: int = 0
    seed: int = 42
    patience: int = 5  # early stopping on validation AUC, best weights restored
    mixed_precision: bool = False
    cache: bool = True  # keep decoded, resized uint8 images in memory across epochs
    augment: bool = True
    steps_per_epoch: int | None = None  # cap, for smoke runs; None = the whole training split
    # Test hook: raise after this many epochs in total, to exercise resume. Not a flag.
    stop_after_epochs: int | None = None
