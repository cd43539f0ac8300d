"""Constants both jobs share: class names, image size, layer names, BreakHis vocabulary."""

from __future__ import annotations

CLASS_NAMES: tuple[str, str] = ("benign", "malignant")
"""Index 0 is benign, index 1 malignant; the model's single output is P(malignant)."""

POSITIVE_CLASS = "malignant"
DEFAULT_IMAGE_SIZE = 128
MIN_IMAGE_SIZE = 32  # VGG16's five 2x2 poolings need at least 32 pixels a side.
# Above this the head's Flatten -> Dense grows past 30 million weights (16 x 16 x 512 x 256 at
# 512 px) and every image costs 16 times the default's compute; BreakHis tiles are 700 x 460.
MAX_IMAGE_SIZE = 512

# Test-time augmentation: how many dihedral views of an image may be scored (model/network/tta.py).
TTA_CHOICES: tuple[int, ...] = (1, 2, 4, 8)
# The model card's heatmap_scale is this percentile of the per-image Grad-CAM peaks on the
# validation split (model/network/gradcam.py): robust to a few extreme maps, and reached or passed
# by the images with the strongest evidence for malignancy.
HEATMAP_SCALE_PERCENTILE = 95.0

LAST_CONV_LAYER = "block5_conv3"
LOGIT_LAYER = "logit"  # the trained logit, before calibration
# logit / T (temperature scaling): Grad-CAM's score in exports with calibration, so its
# sigmoid equals the model's output. Exports made before calibration name LOGIT_LAYER instead.
CALIBRATED_LOGIT_LAYER = "calibrated_logit"
PROBABILITY_LAYER = "p_malignant"

MAGNIFICATIONS: tuple[str, ...] = ("40X", "100X", "200X", "400X")

# HED stain jitter of training images (model/image/stain.py): the --stain_jitter default, chosen
# from benchmarks/stain_variation.py on the BreakHis sample (see model/image/stain.py), and the
# limit that keeps every scale factor 1 - s above 0.
DEFAULT_STAIN_JITTER = 0.05
MAX_STAIN_JITTER = 1.0

# A cross-validation output folder: one complete training export per fold in
# <output_dir>/fold-<i>/, and the aggregates of all folds in <output_dir>/cv/.
FOLD_DIR_PREFIX = "fold-"
CV_DIR = "cv"


def fold_dir_name(index: int) -> str:
    """The folder name of fold `index` (0-based) inside a cross-validation output folder."""
    return f"{FOLD_DIR_PREFIX}{index}"


# BreakHis subtype code -> (folder name, class name).
SUBTYPES: dict[str, tuple[str, str]] = {
    "A": ("adenosis", "benign"),
    "F": ("fibroadenoma", "benign"),
    "PT": ("phyllodes_tumor", "benign"),
    "TA": ("tubular_adenoma", "benign"),
    "DC": ("ductal_carcinoma", "malignant"),
    "LC": ("lobular_carcinoma", "malignant"),
    "MC": ("mucinous_carcinoma", "malignant"),
    "PC": ("papillary_carcinoma", "malignant"),
}

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Files of a training export; the scoring pipeline reads exactly these.
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
MODEL_CARD_FILE = "model_card.json"
