"""Find BreakHis images and split them train / validation / test with no specimen on two sides.

Images of one patient look alike, so a random image split leaks. Every split here is made of
whole specimens (a slide id without its section letters, so every section of one specimen and
hence every patient stays on one side), stratified by class and reproducible from a seed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import io
import logging
import os
import random
from collections.abc import Iterable, Sequence

from model import storage
from model.constants import CLASS_NAMES, MAGNIFICATIONS
from model.image.naming import (
    ImageInfo,
    is_image_file,
    is_valid_utf8_name,
    parse_breakhis_name,
    printable_path,
)
from model.image.preprocessing import measure_image
from model.image.quality import QualityMeasures

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_FILE = "split.csv"  # an export's split: split_csv_text of every image used
SPLIT_CSV_COLUMNS = ("image_path", "split", "label", "slide_id", "specimen", "magnification")


class DataError(ValueError):
    """The data cannot be used as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class LabeledImage:
    """An image file and what its BreakHis name says."""

    path: str
    info: ImageInfo


@dataclasses.dataclass
class Discovery:
    """The images found under a data folder, and the image files whose names did not parse."""

    images: list[LabeledImage]
    unparsed: list[str]
    skipped_magnification: int = 0
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> reason
    # path -> input quality measures, taken in the same decode that checks readability
    quality: dict[str, QualityMeasures] = dataclasses.field(default_factory=dict)


UNREADABLE_NAME = "file name is not valid UTF-8 (shown with \\xNN escapes); rename it to use it"


def inspect_images(
    paths: Sequence[str], max_bytes: int = storage.DEFAULT_MAX_BYTES, threads: int = 8
) -> tuple[dict[str, str], dict[str, QualityMeasures]]:
    """(path -> reason for every file that cannot be read and decoded, path -> the input quality
    measures of every other file), decoding each file once, in parallel.

    Costs one decode per image up front (about 9 ms for a 700x460 PNG, plus about 3 ms for the
    quality measures, shared across threads), so a corrupt file is listed and left out instead
    of failing training mid-epoch, and the measures need no decode of their own. FIFOs, devices,
    dangling links and files over max_bytes are refused unopened.
    """

    def inspect(path: str) -> str | QualityMeasures:
        try:
            return measure_image(storage.read_bytes(path, max_bytes=max_bytes))
        except Exception as error:  # any failure to read or decode excludes the file
            return f"{type(error).__name__}: {error}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(inspect, paths))
    unreadable, quality = {}, {}
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, str):
            unreadable[path] = result
        else:
            quality[path] = result
    return unreadable, quality


def list_image_files(data_dir: str, exclude_dir: str | None = None) -> list[str]:
    """Every file with an image extension below data_dir, leaving out exclude_dir's files.

    Training exports into a folder inside the data folder must not become training data.
    """
    paths = [path for path in storage.list_files(data_dir) if is_image_file(path)]
    if exclude_dir:
        separator = "/" if storage.is_remote(exclude_dir) else os.sep
        prefix = exclude_dir.rstrip(separator) + separator
        paths = [path for path in paths if not path.startswith(prefix)]
    return paths


def discover_images(
    data_dir: str,
    magnifications: Sequence[str] = MAGNIFICATIONS,
    check_readable: bool = True,
    max_bytes: int = storage.DEFAULT_MAX_BYTES,
    exclude_dir: str | None = None,
) -> Discovery:
    """Every image below data_dir (BreakHis layout or flat) but exclude_dir's, parsed and (by
    default) decoded once, which also takes each image's input quality measures; unparsable
    names and unreadable files are set aside with reasons.

    Names that are not valid UTF-8 count as unreadable: no text output could carry them. Such
    paths, and unparsed ones, are kept as `naming.printable_path` text.
    """
    unknown = sorted(set(magnifications) - set(MAGNIFICATIONS))
    if unknown:
        raise DataError(f"unknown magnification(s) {unknown}; choose from {list(MAGNIFICATIONS)}")
    if not storage.is_remote(data_dir):
        # Absolute, so split.csv (and manifests made from it) do not depend on the working folder.
        data_dir = os.path.abspath(data_dir)
    paths = list_image_files(data_dir, exclude_dir)
    images, unparsed, skipped = [], [], 0
    unreadable: dict[str, str] = {}
    quality: dict[str, QualityMeasures] = {}
    for path in paths:
        if not is_valid_utf8_name(path):
            unreadable[printable_path(path)] = UNREADABLE_NAME
            continue
        info = parse_breakhis_name(path)
        if info is None:
            unparsed.append(path)
        elif info.magnification not in magnifications:
            skipped += 1
        else:
            images.append(LabeledImage(path, info))
    if unparsed:
        logger.warning(
            "%d image file(s) under %s do not follow the BreakHis naming convention and are not "
            "used (first: %s)",
            len(unparsed),
            data_dir,
            unparsed[0],
        )
    if not images:
        raise DataError(
            f"no BreakHis images for magnifications {list(magnifications)} under {data_dir} "
            f"({len(paths)} image files found, {len(unparsed)} with unparsable names)"
        )
    if check_readable:
        failed, quality = inspect_images([image.path for image in images], max_bytes)
        unreadable.update(failed)
    if unreadable:
        logger.warning(
            "%d image file(s) cannot be read and are not used (first: %s: %s)",
            len(unreadable),
            *next(iter(unreadable.items())),
        )
        images = [image for image in images if image.path not in unreadable]
    if not images:
        first, reason = next(iter(unreadable.items()))
        raise DataError(
            f"none of the BreakHis images under {data_dir} can be read (first: {first}: {reason})"
        )
    return Discovery(images, unparsed, skipped, unreadable, quality)


def _specimens_by_class(images: Iterable[LabeledImage]) -> dict[str, dict[str, int]]:
    """class name -> {specimen: image count}; a specimen's class is its images' majority label."""
    labels: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for image in images:
        labels[image.info.specimen][image.info.label] += 1
    by_class: dict[str, dict[str, int]] = {name: {} for name in CLASS_NAMES}
    for specimen, counts in sorted(labels.items()):
        by_class[counts.most_common(1)[0][0]][specimen] = sum(counts.values())
    return by_class


def _take_near(specimens: list[str], counts: dict[str, int], target: float, keep: int) -> list[str]:
    """Remove and return specimens whose image total comes near `target`, leaving `keep` behind.

    Walks the (shuffled) list and takes a specimen whenever it brings the total closer to the
    target, so one large specimen does not overshoot the split; takes at least one specimen.
    """
    taken: list[str] = []
    total = 0
    for specimen in list(specimens):
        if len(specimens) <= keep:
            break
        if abs(total + counts[specimen] - target) < abs(total - target):
            specimens.remove(specimen)
            taken.append(specimen)
            total += counts[specimen]
    if not taken and len(specimens) > keep:
        smallest = min(specimens, key=lambda specimen: counts[specimen])
        specimens.remove(smallest)
        taken.append(smallest)
    return taken


def _require_specimens(by_class: dict[str, dict[str, int]], needed: int, what: str) -> None:
    for name, specimens in by_class.items():
        if len(specimens) < needed:
            raise DataError(
                f"{what} needs at least {needed} {name} specimens (patients), found "
                f"{len(specimens)}; add data or change the split"
            )


def split_by_specimen(
    images: Sequence[LabeledImage],
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 42,
) -> dict[str, str]:
    """specimen -> split, stratified by class, with image shares near the fractions."""
    by_class = _specimens_by_class(images)
    _require_specimens(by_class, 3, "a train/validation/test split")
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for counts in by_class.values():
        order = sorted(counts)
        rng.shuffle(order)
        total = sum(counts.values())
        for specimen in _take_near(order, counts, test_fraction * total, keep=2):
            assignment[specimen] = "test"
        for specimen in _take_near(order, counts, val_fraction * total, keep=1):
            assignment[specimen] = "validation"
        for specimen in order:
            assignment[specimen] = "train"
    return assignment


def fold_by_specimen(
    images: Sequence[LabeledImage],
    folds: int,
    fold: int,
    val_fraction: float = 0.15,
    seed: int = 42,
) -> dict[str, str]:
    """specimen -> split for K-fold cross-validation: fold `fold` is the test set.

    Specimens of each class are dealt to the fold holding the fewest images so far (largest
    first, ties in seeded random order), so folds are balanced in images and every specimen is
    in exactly one fold. Validation specimens are then drawn from the other folds.

    The partition draws from its own seeded generator and the validation draw from another, so
    the partition is the same whichever fold is asked for: the K test sets are disjoint and
    cover every specimen, in one process or in K.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(f"--fold must be in [0, {folds}) and --folds at least 2")
    by_class = _specimens_by_class(images)
    _require_specimens(by_class, folds + 1, f"{folds}-fold cross-validation with a validation set")
    partition_rng = random.Random(seed)
    # A string seed is hashed with SHA-512, the same in every process.
    validation_rng = random.Random(f"validation:{seed}:{folds}:{fold}")
    assignment: dict[str, str] = {}
    for counts in by_class.values():
        order = sorted(counts)
        partition_rng.shuffle(order)
        order.sort(key=lambda specimen: -counts[specimen])  # stable: ties keep the seeded order
        fold_images = [0] * folds
        fold_of: dict[str, int] = {}
        for specimen in order:
            target = min(range(folds), key=lambda index: (fold_images[index], index))
            fold_of[specimen] = target
            fold_images[target] += counts[specimen]
        rest = [specimen for specimen in sorted(counts) if fold_of[specimen] != fold]
        validation_rng.shuffle(rest)
        rest_total = sum(counts[specimen] for specimen in rest)
        validation = set(_take_near(rest, counts, val_fraction * rest_total, keep=1))
        for specimen, index in fold_of.items():
            if index == fold:
                assignment[specimen] = "test"
            else:
                assignment[specimen] = "validation" if specimen in validation else "train"
    return assignment


def split_rows(images: Sequence[LabeledImage], assignment: dict[str, str]) -> list[dict]:
    """One split.csv row per image; raises DataError if a specimen would be on two sides."""
    rows = [
        {
            "image_path": image.path,
            "split": assignment[image.info.specimen],
            "label": image.info.label,
            "slide_id": image.info.slide_id,
            "specimen": image.info.specimen,
            "magnification": image.info.magnification,
        }
        for image in sorted(images, key=lambda image: image.path)
    ]
    assert_specimen_disjoint(rows)
    return rows


def assert_specimen_disjoint(rows: Iterable[dict]) -> None:
    """Raise DataError if any specimen (or slide) has images on more than one side."""
    sides: dict[str, set[str]] = collections.defaultdict(set)
    for row in rows:
        sides[row["specimen"]].add(row["split"])
        sides[row["slide_id"]].add(row["split"])
    leaking = sorted(key for key, splits in sides.items() if len(splits) > 1)
    if leaking:
        raise DataError(f"specimens on more than one side of the split: {leaking}")


def split_csv_text(rows: Sequence[dict]) -> str:
    """split.csv content."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SPLIT_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summarize_split(rows: Sequence[dict]) -> dict:
    """Images and patients (slide ids) and specimens per split and class, for the model card."""
    summary: dict = {}
    for split in SPLITS:
        in_split = [row for row in rows if row["split"] == split]
        summary[split] = {
            name: {
                "images": sum(1 for row in in_split if row["label"] == name),
                "patients": len({row["slide_id"] for row in in_split if row["label"] == name}),
                "specimens": len({row["specimen"] for row in in_split if row["label"] == name}),
            }
            for name in CLASS_NAMES
        }
    return summary
