"""EndoARSS checkpoints: one ``.safetensors`` file, weights plus JSON metadata in its header.

The safetensors header's ``metadata`` (a ``str -> str`` map) holds one key, ``endoarss``,
whose value is a JSON document::

    {"format": "endoarss-checkpoint", "format_version": 1,
     "architecture": "endoarss" | "official",
     "config": {...EndoARSSConfig.to_dict() or OfficialConfig.to_dict()...},
     "activity_classes": [...], "segmentation_classes": [...],
     "segmentation_colors": [[r, g, b], ...], "mean": [...], "std": [...],
     "input_size": [H, W], "training": {...},
     "calibration": {"activity_temperature": T_a, "segmentation_temperature": T_s,
                     "fit": {...}},                  # optional
     "trust": {"ood": {...FeatureStatistics.to_metadata()..., "fit": {...}}}}  # optional

The tensors are the model's full state dict, frozen DINOv2 weights included (each once), so a
checkpoint needs no other file. Loading parses only the safetensors header and raw tensor
data: nothing is unpickled. Every inconsistency is a :class:`CheckpointError` that says what.

A file is distrusted until it has been checked, in this order, each step refusing with one line
that names the file: the safetensors header is parsed here (length field within the file, UTF-8,
JSON without repeated keys, every tensor's dtype, shape and byte range inside the data and not
overlapping another); the config is checked against its bounds (:mod:`.config`) and then against
the tensors the header lists (number of blocks, token width, position-embedding grid) **before
any model is built**, so a header claiming ``depth: 200000`` cannot make the loader build
200000 blocks; only then is the model built (on the meta device) and every tensor's name and
shape compared, and the loaded weights must be finite.

``architecture`` names the network the config describes: ``endoarss`` (this project's model;
the default, so files written before the field existed read unchanged) or ``official`` (the
authors' released network, :mod:`endoarss_ros.model.official`, for converted release weights).

``calibration`` (optional, :class:`Calibration`) holds the temperature of each head that
``endoarss calibrate`` fitted. A file without it, every file written before the field existed
included, reads unchanged and runs with temperature 1; it is written only when set, so an
uncalibrated checkpoint stays readable by readers that predate the field.

``trust`` (optional, :class:`Trust`) holds what the per-frame trust assessment needs from
training: the :class:`~endoarss_ros.trust.ood.FeatureStatistics` of the out-of-distribution
score, fitted by ``endoarss calibrate``. Their arrays are tensors of the same file, named
``trust.ood.means``, ``trust.ood.components`` and ``trust.ood.variances`` (float32; 1.5 MB
for ViT-B's features at rank 256), and the rest is the ``trust.ood`` entry above (``fit``: how
they were fitted, free JSON). The weight loader skips the ``trust.`` tensors; everything else
about them is checked as strictly as a weight, by ``FeatureStatistics``' own parser, each
failure one line naming the field (``trust.ood.components must be ...``): an entry without
its tensors, tensors without the entry, a wrong shape or dtype, non-finite values, a bad
number, and a ``dim`` that is not the model's pooled feature width. Like ``calibration`` it is
written only when set; a file without it runs with the image checks alone. Read them with
:attr:`CheckpointMetadata.trust` (:attr:`CheckpointMetadata.feature_statistics`) from
:func:`read_metadata` or :func:`load_checkpoint`, or :func:`load_feature_statistics`; store
them by saving metadata with ``trust`` set.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from endoarss_ros.trust.ood import ARRAYS as OOD_ARRAYS
from endoarss_ros.trust.ood import FeatureStatistics, pooled_dim
from endoarss_ros.validation import (
    Choice,
    Integer,
    ListOf,
    MappingOf,
    Number,
    Section,
    Text,
    ValidationError,
    check,
    setting,
)

from .backbone import check_input_size
from .config import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, ConfigError, EndoARSSConfig
from .endoarss import EndoARSS
from .official import OfficialConfig, OfficialEndoARSS

FORMAT_NAME = "endoarss-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "endoarss"

_SHOW = 12

Model = EndoARSS | OfficialEndoARSS
ModelConfig = EndoARSSConfig | OfficialConfig

ARCHITECTURES: dict[str, tuple[type[EndoARSSConfig] | type[OfficialConfig], type[Model]]] = {
    "endoarss": (EndoARSSConfig, EndoARSS),
    "official": (OfficialConfig, OfficialEndoARSS),
}
"""Architecture name -> (config class, model class); ``endoarss`` when a file names none."""
DEFAULT_ARCHITECTURE = "endoarss"


def architecture_of(model: Model) -> str:
    """The :data:`ARCHITECTURES` name of a model instance."""
    for name, (_, cls) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"not a checkpointable model: {type(model).__name__}")


class CheckpointError(ValidationError):
    """The file is not a readable EndoARSS checkpoint, or does not fit the model it describes.

    A metadata error names the field; errors found while reading a file also name the file
    (``source``)."""


def _keys(keys: Sequence[str] | set[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


_CLASS_NAMES = ListOf(Text(non_empty=True), min_length=1, unique=True)

TEMPERATURE_RANGE = (0.01, 100.0)
"""Temperatures a checkpoint may hold: far outside it a fit has failed (a temperature of 100
makes every output uniform), and the fit is bounded to it."""

_TEMPERATURE = Number(*TEMPERATURE_RANGE)


@dataclass(frozen=True)
class Calibration(Section):
    """Temperature scaling of each head (Guo et al. 2017): probabilities are
    ``softmax(logits / T)``, which leaves every argmax as it is but makes confidences match
    accuracy on the data the temperatures were fitted on. 1 is no scaling (a head that was not
    fitted, e.g. the untrained head of a single-task model). ``fit`` records how they were
    fitted (data, frames, corruptions, NLL and ECE before and after), free-form JSON."""

    SECTION: ClassVar[str] = "calibration"
    ERROR: ClassVar[type[ValidationError]] = CheckpointError

    activity_temperature: float = setting(
        1.0, _TEMPERATURE, doc="temperature dividing the activity logits"
    )
    segmentation_temperature: float = setting(
        1.0, _TEMPERATURE, doc="temperature dividing every pixel's segmentation logits"
    )
    fit: Mapping[str, Any] = setting(
        rule=MappingOf(), default_factory=dict, doc="how the temperatures were fitted (JSON)"
    )

    def validate(self) -> None:
        try:
            json.dumps(self.fit, allow_nan=False)
        except (TypeError, ValueError) as exc:
            self.fail("fit", f"must be JSON-serialisable: {exc}")


TRUST_PREFIX = "trust."
"""Tensors whose names start with it are trust statistics, not weights."""
OOD_PREFIX = "trust.ood."
"""Prefix of the :class:`FeatureStatistics` arrays' tensor names."""
OOD_TENSORS = tuple(OOD_PREFIX + name for name in OOD_ARRAYS)


@dataclass(frozen=True, eq=False)
class Trust:
    """What the per-frame trust assessment reads from a checkpoint: ``ood``, the statistics
    of the backbone's pooled features on the training data, scored by the Mahalanobis OOD
    check, and ``ood_fit``, how they were fitted (data, split, frames; free-form JSON)."""

    ood: FeatureStatistics
    ood_fit: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.ood, FeatureStatistics):
            raise CheckpointError(
                "trust.ood", f"must be FeatureStatistics, got {type(self.ood).__name__}"
            )
        fit = check("trust.ood.fit", self.ood_fit, MappingOf(), CheckpointError)
        try:
            json.dumps(fit, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckpointError("trust.ood.fit", f"must be JSON-serialisable: {exc}") from None
        object.__setattr__(self, "ood_fit", fit)

    def to_dict(self) -> dict[str, Any]:
        """The ``trust`` metadata entry (the arrays are :meth:`tensors`)."""
        return {"ood": {**self.ood.to_metadata(), "fit": dict(self.ood_fit)}}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays, named as stored (:data:`OOD_TENSORS`)."""
        return self.ood.to_tensors(OOD_PREFIX)

    @classmethod
    def from_stored(cls, entry: Any, tensors: Mapping[str, Any]) -> Trust:
        """Parse a file's ``trust`` entry with its ``trust.`` tensors, refusing any field
        that cannot be used (:class:`CheckpointError` naming it)."""
        if not isinstance(entry, Mapping):
            raise CheckpointError("trust", f"must be a mapping, got {type(entry).__name__}")
        unknown = sorted(str(k) for k in entry if k != "ood")
        if unknown:
            raise CheckpointError(f"trust.{unknown[0]}", "is not a known field (known: ood)")
        if "ood" not in entry:
            raise CheckpointError("trust.ood", "is missing")
        ood = entry["ood"]
        if not isinstance(ood, Mapping):
            raise CheckpointError("trust.ood", f"must be a mapping, got {type(ood).__name__}")
        extra = sorted(set(tensors) - set(OOD_TENSORS))
        if extra:
            raise CheckpointError(extra[0], "is not a trust tensor this reader knows")
        statistics = FeatureStatistics.from_tensors(
            tensors,
            {k: v for k, v in ood.items() if k != "fit"},
            prefix=OOD_PREFIX,
            field="trust.ood",
            error=CheckpointError,
        )
        return cls(statistics, ood.get("fit", {}))


@dataclass(frozen=True)
class CheckpointMetadata(Section):
    """Everything besides weights and architecture that a deployed model needs.

    ``segmentation_colors`` are RGB triples (0-255), one per segmentation class. ``mean``/``std``
    normalise ``[0, 1]`` RGB input. ``input_size`` is the (H, W) the model was trained at
    (multiples of 14 for ``endoarss``; the ``official`` network resizes internally, so any size).
    ``training`` is free-form JSON (epochs, metrics, dataset, ...). ``architecture`` names the
    network (a key of :data:`ARCHITECTURES`).
    """

    ERROR: ClassVar[type[ValidationError]] = CheckpointError

    activity_classes: tuple[str, ...] = setting(
        rule=_CLASS_NAMES, doc="activity class names, in the order of the logits"
    )
    segmentation_classes: tuple[str, ...] = setting(
        rule=_CLASS_NAMES, doc="segmentation class names, by label id"
    )
    segmentation_colors: tuple[tuple[int, int, int], ...] = setting(
        rule=ListOf(
            ListOf(Integer(0, 255), length=3), what="a list of RGB triples of integers 0-255"
        ),
        doc="overlay colour of each segmentation class",
    )
    input_size: tuple[int, int] = setting(
        rule=ListOf(Integer(1), length=2, what="two positive integers (H, W)"),
        doc="input height and width the model was trained at",
    )
    mean: tuple[float, float, float] = setting(
        IMAGENET_MEAN,
        ListOf(Number(), length=3, what="3 finite numbers"),
        doc="per-channel mean subtracted from [0, 1] RGB input",
    )
    std: tuple[float, float, float] = setting(
        IMAGENET_STD,
        ListOf(Number(0, low_open=True), length=3, what="3 positive numbers"),
        doc="per-channel divisor of [0, 1] RGB input",
    )
    training: Mapping[str, Any] = setting(
        rule=MappingOf(), default_factory=dict, doc="free-form JSON about the training run"
    )
    format_version: int = setting(FORMAT_VERSION, Integer(), doc="checkpoint format version")
    architecture: str = setting(
        DEFAULT_ARCHITECTURE, Choice(tuple(ARCHITECTURES)), doc="network the config describes"
    )
    calibration: Calibration | None = None
    """Fitted temperatures (None: not calibrated, temperature 1). A mapping (as ``to_dict``
    writes it) is read into a :class:`Calibration`."""
    trust: Trust | None = None
    """Feature statistics of the OOD score (None: none fitted; the image checks alone)."""

    def validate(self) -> None:
        if self.trust is not None and not isinstance(self.trust, Trust):
            self.fail("trust", f"must be a Trust or null, got {type(self.trust).__name__}")
        if isinstance(self.calibration, Mapping):
            object.__setattr__(self, "calibration", Calibration.from_dict(self.calibration))
        elif self.calibration is not None and not isinstance(self.calibration, Calibration):
            self.fail(
                "calibration",
                f"must be a mapping or null, got {type(self.calibration).__name__}",
            )
        colors, classes = len(self.segmentation_colors), len(self.segmentation_classes)
        if colors != classes:
            self.fail(
                "segmentation_colors", f"has {colors} colours for {classes} segmentation classes"
            )
        if self.architecture != "official":  # the official network resizes to its own size
            try:
                check_input_size(*self.input_size)
            except ValueError as exc:
                self.fail("input_size", f"does not fit the {self.architecture} network: {exc}")
        try:
            json.dumps(self.training, allow_nan=False)
        except (TypeError, ValueError) as exc:
            self.fail("training", f"must be JSON-serialisable: {exc}")

    def to_dict(self) -> dict[str, Any]:
        """The header fields (``format_version`` is written by :func:`save_checkpoint`)."""
        data = super().to_dict()
        del data["format_version"]
        if data["calibration"] is None:
            del data["calibration"]  # written only when set: see the module docstring
        if self.trust is None:
            del data["trust"]
        else:
            data["trust"] = self.trust.to_dict()
        return data

    @property
    def feature_statistics(self) -> FeatureStatistics | None:
        """The OOD score's feature statistics, None when the file has none."""
        return None if self.trust is None else self.trust.ood

    @property
    def temperatures(self) -> tuple[float, float]:
        """(activity, segmentation) temperatures; (1, 1) when not calibrated."""
        if self.calibration is None:
            return 1.0, 1.0
        return self.calibration.activity_temperature, self.calibration.segmentation_temperature


def token_width(config: ModelConfig) -> int:
    """Width of the trunk's tokens, which the pooled features are made of."""
    return config.backbone.embed_dim if isinstance(config, EndoARSSConfig) else config.embed_dim


def _check_fits(config: ModelConfig, meta: CheckpointMetadata) -> None:
    config_cls = ARCHITECTURES[meta.architecture][0]
    if not isinstance(config, config_cls):
        raise CheckpointError(
            f"architecture {meta.architecture!r} needs a {config_cls.__name__}, "
            f"got a {type(config).__name__}"
        )
    if len(meta.activity_classes) != config.num_activities:
        raise CheckpointError(
            f"{len(meta.activity_classes)} activity class names for a model with "
            f"{config.num_activities} activities"
        )
    if len(meta.segmentation_classes) != config.num_seg_classes:
        raise CheckpointError(
            f"{len(meta.segmentation_classes)} segmentation class names for a model with "
            f"{config.num_seg_classes} segmentation classes"
        )
    statistics = meta.feature_statistics
    if statistics is not None:
        width = token_width(config)
        expected = pooled_dim(statistics.pooling, width)
        if statistics.dim != expected:
            raise CheckpointError(
                "trust.ood.dim",
                f"is {statistics.dim} but the model pools {statistics.pooling} features of "
                f"{expected} values (tokens {width} wide)",
            )


def save_checkpoint(path: str | Path, model: Model, metadata: CheckpointMetadata) -> Path:
    """Write ``model`` and ``metadata`` to ``path`` (atomically: a temporary file, then rename).

    The model must be unmerged: a merged model's frozen weights already contain the LoRA
    update, which the stored adapters would then add a second time. ``metadata.trust``, when
    set, adds its arrays as ``trust.`` tensors.
    """
    path = Path(path)
    if model.merged:
        raise CheckpointError("cannot save a merged model; call model.unmerge() first")
    architecture = architecture_of(model)
    if architecture != metadata.architecture:
        raise CheckpointError(
            f"metadata.architecture is {metadata.architecture!r} but the model is {architecture!r}"
        )
    _check_fits(model.config, metadata)
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        **metadata.to_dict(),
    }
    header = {METADATA_KEY: json.dumps(document, allow_nan=False)}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    clash = sorted(k for k in tensors if k.startswith(TRUST_PREFIX))
    if clash:
        raise CheckpointError(f"weight names {_keys(clash)} are reserved for trust statistics")
    if metadata.trust is not None:
        tensors.update(metadata.trust.tensors())
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file private (0600); the checkpoint keeps the mode of the file it
    # replaces, or gets 0644, as a file written in place would.
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> tuple[ModelConfig, CheckpointMetadata]:
    """Parse and validate a checkpoint's header without reading its weights (only the small
    ``trust.`` statistics tensors, when the file has them)."""
    config, meta, _ = _read_checked(Path(path))
    return config, meta


def load_feature_statistics(path: str | Path) -> FeatureStatistics | None:
    """The OOD feature statistics a checkpoint stores (checked as :func:`read_metadata`
    checks everything), None when it has none."""
    return read_metadata(path)[1].feature_statistics


def _read_checked(path: Path) -> tuple[ModelConfig, CheckpointMetadata, dict[str, tuple[int, ...]]]:
    """Config, metadata and the stored tensor shapes, the config checked against the shapes."""
    header = read_header(path)
    document = _read_document(header.metadata, path)
    trust = _read_trust(document, header, path)
    config, meta = _parse_document(document, path, trust)
    _check_config_against_tensors(config, header.shapes, str(path))
    return config, meta, header.shapes


def _read_trust(document: Mapping[str, Any], header: SafetensorsHeader, path: Path) -> Trust | None:
    """The ``trust`` entry with its tensors (only those are read), or None without either."""
    source = str(path)
    names = sorted(k for k in header.shapes if k.startswith(TRUST_PREFIX))
    if "trust" not in document:
        if names:
            raise CheckpointError(
                "trust",
                f"is missing but the file stores its tensor(s) {_keys(names)}",
                source=source,
            )
        return None
    tensors: dict[str, torch.Tensor] = {}
    try:
        if names:
            with safe_open(path, framework="pt", device="cpu") as f:
                tensors = {name: f.get_tensor(name) for name in names}
        return Trust.from_stored(document["trust"], tensors)
    except CheckpointError as exc:
        raise exc.located(source) from None
    except Exception as exc:  # a dtype torch cannot hold, an unreadable byte range
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError("trust", f"tensors cannot be read ({reason})", source=source) from exc


MAX_HEADER_BYTES = 100_000_000
"""The safetensors library's own limit on the JSON header."""

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
"""Bytes per element of each safetensors dtype."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """What a safetensors header declares: its ``__metadata__`` map and each tensor's shape."""

    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]


class _DuplicateKey(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _strict_json(text: str | bytes, what: str, source: str) -> Any:
    """``text`` parsed as JSON, refusing repeated keys; errors name ``what`` and the file."""
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _DuplicateKey as exc:
        raise CheckpointError(
            f"{what} has a duplicate key {exc.args[0]!r}", source=source
        ) from None
    except RecursionError:
        raise CheckpointError(
            f"{what} is not valid JSON (nested too deeply)", source=source
        ) from None
    except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{what} is not valid JSON ({reason})", source=source) from None


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and check a safetensors header without reading any tensor data.

    Refuses, with one line naming the file: a file too short for the length field, a length
    field larger than the file, a header that is not UTF-8 or not a JSON object, repeated keys,
    a malformed tensor entry (dtype, shape, offsets), a byte range that does not match its
    shape, lies beyond the end of the file (truncated) or overlaps another tensor.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError("no such file", source=source)
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"not a safetensors file ({size} bytes, too short for the 8-byte header "
                    "length)",
                    source=source,
                )
            length = int.from_bytes(prefix, "little")
            if length > size - 8:
                raise CheckpointError(
                    f"not a safetensors file, or truncated: its header length field says "
                    f"{length} bytes but only {size - 8} follow",
                    source=source,
                )
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"not a safetensors file: its header length field says {length} bytes, "
                    f"more than the {MAX_HEADER_BYTES} a safetensors header may have",
                    source=source,
                )
            raw = stream.read(length)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read the file ({exc.strerror or exc})", source=source
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"not a safetensors file: its header is not UTF-8 text (byte {exc.start})",
            source=source,
        ) from None
    header = _strict_json(text, "not a safetensors file: its header", source)
    if not isinstance(header, dict):
        raise CheckpointError(
            f"not a safetensors file: its header is a JSON {type(header).__name__}, not an object",
            source=source,
        )
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(
            "safetensors header's __metadata__ is not a map of strings to strings", source=source
        )
    data_size = size - 8 - length
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        shape, dtype, (begin, end) = _tensor_entry(name, entry, source)
        if end > data_size:
            raise CheckpointError(
                f"truncated: tensor {name!r} lies at bytes {begin}-{end} of the data but the "
                f"file holds {data_size} bytes of data",
                source=source,
            )
        shapes[name], dtypes[name] = shape, dtype
        ranges.append((begin, end, name))
    ranges.sort()
    for (_, end, first), (begin, _, second) in itertools.pairwise(ranges):
        if begin < end:
            raise CheckpointError(
                f"tensors {first!r} and {second!r} overlap in the file", source=source
            )
    return SafetensorsHeader(metadata=metadata, shapes=shapes, dtypes=dtypes)


def _tensor_entry(
    name: str, entry: Any, source: str
) -> tuple[tuple[int, ...], str, tuple[int, int]]:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"tensor {name!r} in the header has {what}", source=source)

    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise bad("not exactly the fields dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise bad(f"an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"a shape that is not a list of non-negative integers: {shape!r}"[:200])
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad(f"data_offsets that are not [begin, end] byte positions: {offsets!r}"[:200])
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise bad(
            f"{offsets[1] - offsets[0]} bytes of data but its shape {tuple(shape)} of {dtype} "
            f"needs {expected}"
        )
    return tuple(shape), dtype, (offsets[0], offsets[1])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_BLOCK = re.compile(r"blocks\.(\d+)\.")


def _check_config_against_tensors(
    config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """The config's size-setting fields against the stored tensors, before a model is built.

    Checks where the file has the tensors that show them: the number of transformer blocks,
    the token width and the position embedding's grid. Anything else that differs is found
    by comparing every tensor with the model built on the meta device.
    """
    if isinstance(config, EndoARSSConfig):
        prefix, field_prefix = "backbone.vit.", "config.backbone."
        backbone = config.backbone
        depth, width, side = backbone.depth, backbone.embed_dim, backbone.img_size
        side_field = "img_size"
    else:
        prefix, field_prefix = "vit.", "config."
        depth, width, side = config.depth, config.embed_dim, config.pos_embed_size
        side_field = "pos_embed_size"

    def fail(field: str, message: str) -> None:
        raise CheckpointError(field_prefix + field, message, source=source)

    blocks = {
        int(m.group(1))
        for key in shapes
        if key.startswith(prefix) and (m := _BLOCK.match(key, len(prefix)))
    }
    if blocks and len(blocks) != depth:
        fail("depth", f"is {depth} but the file stores {len(blocks)} blocks")
    cls_token = shapes.get(prefix + "cls_token")
    if cls_token and cls_token[-1] != width:
        fail("embed_dim", f"is {width} but the stored tokens are {cls_token[-1]} wide")
    pos_embed = shapes.get(prefix + "pos_embed")
    if pos_embed and len(pos_embed) == 3:
        grid = (side // PATCH_SIZE) ** 2
        if pos_embed[1] not in (grid, grid + 1):
            fail(
                side_field,
                f"is {side} ({side // PATCH_SIZE} x {side // PATCH_SIZE} patches) but the stored "
                f"position embedding has {pos_embed[1]} tokens",
            )


def _read_document(header: Mapping[str, str], path: Path) -> dict[str, Any]:
    source = str(path)
    if not header or METADATA_KEY not in header:
        raise CheckpointError(
            "a safetensors file without EndoARSS metadata "
            f"(no '{METADATA_KEY}' entry in its header); not an EndoARSS checkpoint",
            source=source,
        )
    document = _strict_json(header[METADATA_KEY], "EndoARSS metadata", source)
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"metadata does not declare format '{FORMAT_NAME}'; not an EndoARSS checkpoint",
            source=source,
        )
    try:
        version = check(
            "format_version", document.get("format_version"), Integer(), CheckpointError
        )
    except CheckpointError as exc:
        raise exc.located(source) from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version} cannot be read; this reader reads "
            f"version {FORMAT_VERSION}",
            source=source,
        )
    return document


def _parse_document(
    document: dict[str, Any], path: Path, trust: Trust | None = None
) -> tuple[ModelConfig, CheckpointMetadata]:
    fields = (
        "config",
        "activity_classes",
        "segmentation_classes",
        "segmentation_colors",
        "mean",
        "std",
        "input_size",
        "training",
    )
    source = str(path)
    missing = [k for k in fields if k not in document]
    if missing:
        raise CheckpointError(f"metadata lacks field(s): {', '.join(missing)}", source=source)
    optional = {"format", "format_version", "architecture", "calibration", "trust"}
    unknown = sorted(set(document) - {*fields, *optional})
    if unknown:
        raise CheckpointError(f"metadata has unknown field(s): {', '.join(unknown)}", source=source)
    architecture = document.get("architecture", DEFAULT_ARCHITECTURE)
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"unknown architecture {architecture!r}; this reader knows {', '.join(ARCHITECTURES)}",
            source=source,
        )
    try:
        config = ARCHITECTURES[architecture][0].from_dict(document["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"invalid model config: {exc}", source=source) from exc
    try:
        meta = CheckpointMetadata(
            activity_classes=document["activity_classes"],
            segmentation_classes=document["segmentation_classes"],
            segmentation_colors=document["segmentation_colors"],
            input_size=document["input_size"],
            mean=document["mean"],
            std=document["std"],
            training=document["training"],
            format_version=document["format_version"],
            architecture=architecture,
            calibration=document.get("calibration"),
            trust=trust,
        )
        _check_fits(config, meta)
    except CheckpointError as exc:
        raise exc.located(source) from None
    return config, meta


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Model, CheckpointMetadata]:
    """Rebuild the model a checkpoint describes and load its weights onto ``map_location``.

    The model comes back unmerged and in eval mode. Missing or unexpected tensors, or tensors
    whose shapes do not fit the stored config (e.g. a head for another class count), are errors.
    The ``trust.`` tensors are not weights: they come back in ``metadata.trust``.
    """
    path = Path(path)
    config, meta, _ = _read_checked(path)
    device = torch.device(map_location)
    model_cls = ARCHITECTURES[meta.architecture][1]
    try:
        with torch.device("meta"):
            model = model_cls(config)
    except Exception as exc:  # a config the rules let through but the network cannot take
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"the stored config does not describe a network that can be built ({reason})",
            source=str(path),
        ) from exc
    expected = model.state_dict()
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            stored = {k for k in f.keys() if not k.startswith(TRUST_PREFIX)}  # noqa: SIM118 (not a dict)
            missing = set(expected) - stored
            unexpected = stored - set(expected)
            problems = []
            if missing:
                problems.append(f"missing weight(s): {_keys(missing)}")
            if unexpected:
                problems.append(f"unexpected weight(s): {_keys(unexpected)}")
            if problems:
                raise CheckpointError("; ".join(problems), source=str(path))
            mismatched = []
            for key in sorted(stored):
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[key].shape):
                    mismatched.append(f"{key} (file {shape}, config {tuple(expected[key].shape)})")
            if mismatched:
                raise CheckpointError(
                    "weight shapes do not fit the stored config (class counts "
                    f"{config.num_activities} activities / {config.num_seg_classes} "
                    f"segmentation classes): {_keys(mismatched)}",
                    source=str(path),
                )
            state = {}
            for key in sorted(stored):
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise CheckpointError(
                        f"weight {key} holds NaN or infinite values", source=str(path)
                    )
                state[key] = tensor
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read the weights ({exc})", source=str(path)) from exc
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left unloaded: {_keys(leftover)}", source=str(path))
    return model.eval(), meta
