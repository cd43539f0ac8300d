"""Fixtures of the scoring-pipeline tests: a tiny export, a mixed input folder, one shared run."""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

IMAGE_SIZE = 32
TILE_WIDTH, TILE_HEIGHT = 96, 64


def spread_logits(model, images: np.ndarray, spread: float = 2.0) -> None:
    """Rescale the logit layer so scores on `images` centre on 0.5 and spread over (0, 1).

    A randomly initialised network gives every image p ~ 0.5; spread scores make the metrics
    checks meaningful (distinct ranks, both classes predicted).
    """
    import keras

    from model.constants import LOGIT_LAYER

    logit = model.get_layer(LOGIT_LAYER)
    kernel, bias = logit.get_weights()
    features = keras.Model(model.inputs, logit.input)([images]).numpy()
    raw = features @ kernel + bias
    scale = spread / (float(raw.std()) + 1e-12)
    logit.set_weights([kernel * scale, (bias - float(np.median(raw))) * scale])


def load_inputs(paths) -> np.ndarray:
    """The model input of each file, through the training preprocessing."""
    from model.image.preprocessing import preprocess_image

    return np.stack([preprocess_image(pathlib.Path(p).read_bytes(), IMAGE_SIZE) for p in paths])


@dataclasses.dataclass(frozen=True)
class ScoringInputs:
    """A folder of inputs for end-to-end runs and what each file is expected to become."""

    root: pathlib.Path
    labelled: list[str]  # BreakHis-named RGB tiles
    other_modes: list[str]  # BreakHis-named grayscale, RGBA and 16-bit PNGs
    unlabelled: list[str]  # readable images whose names do not parse
    broken: list[str]  # files named as images that cannot be decoded
    skipped: list[str]  # non-image files a glob also matches

    @property
    def scorable(self) -> list[str]:
        """Every input that should produce a prediction row."""
        return sorted(self.labelled + self.other_modes + self.unlabelled)

    @property
    def matched(self) -> list[str]:
        """Every image-named input."""
        return sorted(self.scorable + self.broken)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_scoring_inputs(root: pathlib.Path) -> ScoringInputs:
    """Synthetic BreakHis tiles plus other modes, unlabelled, broken and text files."""
    from model.synthetic_data import generate_dataset

    labelled = generate_dataset(
        str(root / "synthetic"),
        patients_per_class=2,
        images_per_magnification=2,
        magnifications=("40X", "100X"),
        width=TILE_WIDTH,
        height=TILE_HEIGHT,
        seed=3,
    )
    rgb = np.asarray(Image.open(labelled[0]).convert("RGB"))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))

    modes_dir = root / "modes" / "SOB_B_TA_22-11111" / "40X"
    modes_dir.mkdir(parents=True)
    other_modes = []
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    # Pillow infers the modes from the arrays: L, RGBA and I;16.
    for sequence, image in (
        (1, Image.fromarray(gray)),
        (2, Image.fromarray(rgba)),
        (3, Image.fromarray(gray.astype(np.uint16) * 257)),
    ):
        path = modes_dir / f"SOB_B_TA-22-11111-40-{sequence:03d}.png"
        path.write_bytes(_png_bytes(image))
        other_modes.append(str(path))

    unlabelled = []
    for folder in ("a", "b"):  # equal file names in different folders
        path = root / "unlabelled" / folder / "tile.png"
        path.parent.mkdir(parents=True)
        path.write_bytes(_png_bytes(Image.fromarray(rgb[:, ::-1])))
        unlabelled.append(str(path))
    jpeg = root / "unlabelled" / "photo.jpg"
    Image.fromarray(rgb).save(jpeg, format="JPEG", quality=90)
    unlabelled.append(str(jpeg))

    broken_dir = root / "broken"
    broken_dir.mkdir()
    valid_png = pathlib.Path(labelled[1]).read_bytes()
    broken = {
        "zero_bytes.png": b"",
        "truncated.png": valid_png[: len(valid_png) // 2],
        "text_named.png": b"this is not an image\n",
    }
    for name, data in broken.items():
        (broken_dir / name).write_bytes(data)

    notes = root / "notes.txt"
    notes.write_text("not an image, skipped by the glob\n")
    return ScoringInputs(
        root=root,
        labelled=sorted(labelled),
        other_modes=sorted(other_modes),
        unlabelled=sorted(unlabelled),
        broken=sorted(str(broken_dir / name) for name in broken),
        skipped=[str(notes)],
    )


@pytest.fixture(scope="session")
def scoring_inputs(tmp_path_factory) -> ScoringInputs:
    """The shared input folder (read-only for tests)."""
    return write_scoring_inputs(tmp_path_factory.mktemp("scoring_inputs"))


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, scoring_inputs) -> str:
    """A 32x32 VGG16 export with random weights and spread-out scores; returns its folder."""
    import keras

    from model.network.architecture import build_classifier
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    keras.utils.set_random_seed(0)
    model = build_classifier(IMAGE_SIZE, weights="none", dense_units=16)
    spread_logits(model, load_inputs(scoring_inputs.labelled))
    export_dir = tmp_path_factory.mktemp("tiny_export")
    write_export(
        model,
        ModelCard(model_id="tiny-test", image_size=IMAGE_SIZE, threshold=0.5),
        str(export_dir),
    )
    return str(export_dir)


def run_scoring(argv: list[str]):
    """pipelines.score.run without saving the (pytest) main session."""
    from pipelines import score

    return score.run(argv, save_main_session=False)


def mixed_inputs_argv(
    scoring_inputs: ScoringInputs, model_dir: str, output_dir: pathlib.Path, *flags: str
) -> list[str]:
    """The scorer's arguments of `in_memory_run` (every input, with an overlapping second
    pattern), into output_dir, with `flags` added."""
    return [
        "--input",
        os.path.join(scoring_inputs.root, "**"),
        os.path.join(scoring_inputs.root, "unlabelled", "a", "*.png"),
        "--model_dir",
        model_dir,
        "--output_dir",
        str(output_dir),
        "--batch_size",
        "8",
        "--max_error_fraction",
        "1",
        *flags,
    ]


@dataclasses.dataclass(frozen=True)
class ScoringRun:
    """A finished run: its output folder and Beam result."""

    output_dir: pathlib.Path
    result: object


@pytest.fixture(scope="session")
def in_memory_run(tmp_path_factory, scoring_inputs, tiny_export) -> ScoringRun:
    """One in_memory DirectRunner run with Grad-CAM over the mixed inputs, shared by tests.

    The second pattern overlaps the first, so deduplication is exercised too.
    """
    output_dir = tmp_path_factory.mktemp("in_memory_run")
    result = run_scoring(mixed_inputs_argv(scoring_inputs, tiny_export, output_dir))
    return ScoringRun(output_dir, result)


# Three members of different weights, thresholds and heatmap scales, for the ensemble tests.
ENSEMBLE_THRESHOLDS = (0.35, 0.5, 0.6)
ENSEMBLE_HEATMAP_SCALES = (0.02, 0.05, 0.1)


def write_member_export(
    export_dir: pathlib.Path,
    seed: int,
    model_id: str,
    inputs: np.ndarray,
    image_size: int = IMAGE_SIZE,
    **card_fields,
) -> str:
    """A tiny export of random weights (seeded) with spread scores; returns its folder."""
    import keras

    from model.network.architecture import build_classifier
    from model.network.model_card import ModelCard
    from train_job.export.files import write_export

    keras.utils.set_random_seed(seed)
    model = build_classifier(image_size, weights="none", dense_units=16)
    if image_size == IMAGE_SIZE:
        spread_logits(model, inputs)
    card = ModelCard(model_id=model_id, image_size=image_size, **card_fields)
    write_export(model, card, str(export_dir))
    return str(export_dir)


@pytest.fixture(scope="session")
def ensemble_cv_folder(tmp_path_factory, scoring_inputs) -> pathlib.Path:
    """A cross-validation output folder: fold-0..2 (complete exports of different weights,
    thresholds and heatmap scales, cards saying --folds 3) and cv/."""
    from model.constants import CV_DIR, fold_dir_name

    root = tmp_path_factory.mktemp("cv_run")
    inputs = load_inputs(scoring_inputs.labelled)
    for fold, (threshold, scale) in enumerate(
        zip(ENSEMBLE_THRESHOLDS, ENSEMBLE_HEATMAP_SCALES, strict=True)
    ):
        write_member_export(
            root / fold_dir_name(fold),
            seed=10 + fold,
            model_id=f"fold-model-{fold}",
            inputs=inputs,
            threshold=threshold,
            heatmap_scale=scale,
            training_config={"folds": 3, "fold": fold},
        )
    (root / CV_DIR).mkdir()
    (root / CV_DIR / "cv_metrics.json").write_text("{}\n")
    return root
