"""What a `.keras` file says about its model, read from the archive's `config.json` alone.

A `.keras` file is a zip holding `config.json` (the architecture), `metadata.json` and the
weights. Reading the config needs neither TensorFlow nor the weights: the zip's directory sits
at its end, so through a seekable `FileSystems` reader only a few kilobytes are fetched, also
from `gs://`.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any, NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

CONFIG_ENTRY = "config.json"
_CONFIG_LIMIT = 64 * 2**20  # a config is kilobytes; refuse to inflate anything huge


class KerasArchiveError(ValueError):
    """The file is not a Keras archive this reader understands."""


class ModelOutline(NamedTuple):
    """The parts of a model's config a scorer checks before loading it."""

    input_shape: tuple[int | None, ...]  # the one input's shape without the batch axis
    layer_names: tuple[str, ...]  # top-level layers, as `Model.get_layer` finds them


def read_config(path: str) -> dict[str, Any]:
    """The parsed `config.json` of a local or remote `.keras` file."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                info = archive.getinfo(CONFIG_ENTRY)
                if info.file_size > _CONFIG_LIMIT:
                    raise KerasArchiveError(f"{CONFIG_ENTRY} is {info.file_size:,} bytes")
                text = archive.read(info)
        except (zipfile.BadZipFile, KeyError) as error:
            raise KerasArchiveError(f"not a Keras archive ({error})") from error
    try:
        config = json.loads(text)
    except ValueError as error:
        raise KerasArchiveError(f"{CONFIG_ENTRY} is not JSON ({error})") from error
    if not isinstance(config, dict):
        raise KerasArchiveError(f"{CONFIG_ENTRY} is not a JSON object")
    return config


def outline(config: dict[str, Any]) -> ModelOutline:
    """Input shape and top-level layer names of a functional model's config."""
    body = config.get("config")
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise KerasArchiveError(
            f"{CONFIG_ENTRY} describes a {config.get('class_name')!r} without a layer list"
        )
    names = tuple(str(layer.get("name") or layer.get("config", {}).get("name")) for layer in layers)
    inputs = [layer for layer in layers if layer.get("class_name") == "InputLayer"]
    if len(inputs) != 1:
        raise KerasArchiveError(f"the model has {len(inputs)} input layers, not one")
    layer_config = inputs[0].get("config", {})
    shape = layer_config.get("batch_shape", layer_config.get("batch_input_shape"))
    if not isinstance(shape, list) or not shape:
        raise KerasArchiveError("the input layer has no batch_shape")
    return ModelOutline(tuple(shape[1:]), names)


def read_outline(path: str) -> ModelOutline:
    """The ModelOutline of a local or remote `.keras` file."""
    return outline(read_config(path))
