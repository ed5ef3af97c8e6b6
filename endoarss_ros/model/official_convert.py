"""``endoarss convert-official``: the authors' released checkpoints -> an EndoARSS checkpoint.

The release ships each trained model as ``torch.save(model.state_dict())`` of LibMTL's MOLA
wrapper. Its keys, and where they go in :class:`~endoarss_ros.model.official.OfficialEndoARSS`:

====================================  ======================================================
release                               this package
====================================  ======================================================
``encoder.encoder.mob.*``             ``sma.*`` (EMA's ``gn`` is called ``norm``)
``encoder.encoder.mask_token``        ``mask_token``
``encoder.encoder.blocks.N...lora_*`` ``vit.blocks.N...lora_*`` (DV-LoRA A, B, U, V)
``encoder.encoder.*`` (other)         ``vit.*`` via timm's DINOv2 ``checkpoint_filter_fn``
``decoders.segmentation.*``           ``seg_head.*``
``decoders.classification.*``         ``activity_head.*``
====================================  ======================================================

The file is read with ``torch.load(weights_only=True)``: nothing but tensors and containers is
unpickled. Every key and shape is checked against the released layout before anything is
converted (a DINOv2 position embedding of another size would otherwise be resampled silently);
a missing, extra or misshapen key is an error naming it. The output is an ordinary EndoARSS
checkpoint with ``architecture: official``, mean 0 / std 1 (the release does not normalise)
and input size 244 x 244 (the release's resize before the network's own 224 x 224 one); it
records the release's dataset layout, so ``endoarss eval CHECKPOINT --set data.root=DIR --out
REPORT`` evaluates it on a dataset in that layout.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import torch

from endoarss_ros.data.classes import MTLENDOVIS_CLASSES, MTLESD_CLASSES, ClassInfo

from .checkpoint import CheckpointMetadata, save_checkpoint
from .official import OfficialConfig, OfficialEndoARSS
from .weights import check_keys, convert_to_timm

DATASETS: dict[str, ClassInfo] = {"mtlesd": MTLESD_CLASSES, "mtlendovis": MTLENDOVIS_CLASSES}
"""Datasets of the released checkpoints and their label sets."""

INPUT_SIZE = (244, 244)
"""The release's data loader resizes every image to this before the network sees it."""

_ENCODER = "encoder.encoder."
_VIT_ONLY_RELEASE_KEYS = ("mask_token",)  # in the release's ViT, outside timm's
# (this package's prefix, the release's prefix), most specific first
_PREFIXES = (
    ("sma.", _ENCODER + "mob."),
    ("mask_token", _ENCODER + "mask_token"),
    ("vit.", _ENCODER),
    ("seg_head.", "decoders.segmentation."),
    ("activity_head.", "decoders.classification."),
)
_RENAMES = ((".ema.norm.", ".ema.gn."),)
_WRAPPERS = ("state_dict", "model", "model_state_dict")
_SHOW = 12


class OfficialCheckpointError(ValueError):
    """A file is not a released EndoARSS state dict of the expected layout; names the keys."""


def _is_adapter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "lora_U", "lora_V")


def _release_key(key: str) -> str:
    for ours, theirs in _PREFIXES:
        if key.startswith(ours):
            key = theirs + key[len(ours) :]
            break
    else:
        raise KeyError(f"no release name for {key!r}")
    for ours, theirs in _RENAMES:
        key = key.replace(ours, theirs)
    return key


def to_release_state_dict(model: OfficialEndoARSS) -> dict[str, torch.Tensor]:
    """``model``'s state dict under the release's key names (what its ``.pt`` files hold)."""
    return {_release_key(k): v for k, v in model.state_dict().items()}


def read_release_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat ``name -> tensor`` dict of a released ``.pt`` file (tensors-only unpickling).

    A plain state dict is what the release ships; a dict holding it under ``state_dict``,
    ``model`` or ``model_state_dict`` and a DataParallel ``module.`` prefix are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OfficialCheckpointError(
            f"{path}: not a tensors-only PyTorch file ({_load_failure(exc)})"
        ) from exc
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in _WRAPPERS if isinstance(state.get(k), dict)]
        if len(nested) == 1:
            state = state[nested[0]]
    if not isinstance(state, dict) or not state:
        raise OfficialCheckpointError(
            f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}"
        )
    bad = sorted(
        str(k)
        for k, v in state.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    )
    if bad:
        raise OfficialCheckpointError(
            f"{path}: expected a state dict of tensors; other entries: {', '.join(bad[:_SHOW])}"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line of our own words.

    PyTorch's own message advises loading with ``weights_only=False`` (which would run any code
    the pickle names) or allow-listing the class; neither is ever right for a file from
    elsewhere, so its text is not passed on."""
    text = str(exc)
    if "weights_only" in text or "Weights only" in text or "Unsupported" in text:
        match = _GLOBAL.search(text)
        named = f" ({match.group(1)})" if match else ""
        return (
            f"it holds pickled Python objects{named} besides tensors; only a plain state dict "
            "of tensors is read"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


def release_to_model_state(
    state: dict[str, torch.Tensor], model: OfficialEndoARSS, path: str | Path = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Check ``state`` (release layout) key for key and shape for shape against ``model``'s
    release layout, then rename it to ``model``'s own state dict keys."""
    expected = {k: v.shape for k, v in to_release_state_dict(model).items()}
    try:
        check_keys(state, expected, path)
    except ValueError as exc:
        raise OfficialCheckpointError(
            f"{exc} (expected the released EndoARSS layout for "
            f"{model.config.num_activities} activities and {model.config.num_seg_classes} "
            "segmentation classes)"
        ) from None
    ours = {_release_key(k): k for k in model.state_dict()}
    out: dict[str, torch.Tensor] = {}
    vit_frozen: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if (
            key.startswith(_ENCODER)
            and not key.startswith(_ENCODER + "mob.")
            and not _is_adapter(key)
            and key[len(_ENCODER) :] not in _VIT_ONLY_RELEASE_KEYS
        ):
            vit_frozen[key[len(_ENCODER) :]] = value
        else:
            out[ours[key]] = value
    # The release's ViT is Meta's DINOv2 code: timm's filter maps it (and drops mask_token,
    # which this model keeps as its own parameter, passed through above).
    vit_frozen["mask_token"] = state[_ENCODER + "mask_token"]
    converted, _ = convert_to_timm(vit_frozen, model.vit, "meta", path)
    out.update({"vit." + k: v for k, v in converted.items()})
    expected_ours = {k: v.shape for k, v in model.state_dict().items()}
    check_keys(out, expected_ours, path)
    return out


def release_metadata(
    dataset: str, source: Path | None = None, digest: str | None = None
) -> CheckpointMetadata:
    """Metadata of a converted release checkpoint: the dataset's classes, no normalisation."""
    classes = DATASETS[dataset]
    training = {
        "source": "EndoARSS authors' released checkpoint (github.com/gkw0010/EndoARSS)",
        "dataset": classes.name,
        "class_names_note": classes.notes,
        "preprocessing": "resize to 244x244, scale to [0, 1]; the network resizes to 224x224",
        # What `endoarss eval` reads to find the data: the release's folder layout, whose
        # root the user supplies (--set data.root=...).
        "config": {
            "data": {
                "source": "official",
                "root": None,
                "official_classes": dataset,
                "mask_mapping": "official",
                "test_split": "test",
            }
        },
    }
    if source is not None:
        training["converted_from"] = source.name
    if digest is not None:
        training["source_sha256"] = digest
    return CheckpointMetadata(
        activity_classes=classes.activities,
        segmentation_classes=classes.segmentation,
        segmentation_colors=classes.colors,
        input_size=INPUT_SIZE,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        training=training,
        architecture="official",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_release(
    source: str | Path,
    dataset: str,
    output: str | Path,
    config: OfficialConfig | None = None,
) -> Path:
    """Convert a released ``.pt`` file for ``dataset`` into an EndoARSS checkpoint at
    ``output``. ``config`` defaults to the released network with the dataset's class counts."""
    source = Path(source)
    if dataset not in DATASETS:
        raise OfficialCheckpointError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}"
        )
    classes = DATASETS[dataset]
    if config is None:
        config = OfficialConfig(
            num_activities=classes.num_activities,
            num_seg_classes=classes.num_segmentation_classes,
        )
    state = read_release_file(source)
    with torch.device("meta"):
        model = OfficialEndoARSS(config)
    weights = release_to_model_state(state, model, source)
    model.load_state_dict(weights, strict=True, assign=True)
    metadata = release_metadata(dataset, source, _sha256(source))
    return save_checkpoint(output, model.eval(), metadata)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="released state dict (.pt)")
    parser.add_argument(
        "--dataset",
        required=True,
        choices=sorted(DATASETS),
        help="dataset the checkpoint was trained on (sets class names and counts)",
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, help="EndoARSS checkpoint to write"
    )


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError

    try:
        path = convert_release(args.source, args.dataset, args.output)
    except (OfficialCheckpointError, CheckpointError, ValueError) as exc:
        print(f"endoarss convert-official: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    classes = DATASETS[args.dataset]
    print(
        f"wrote {path}: released EndoARSS network, {classes.name} "
        f"({classes.num_activities} activities, {classes.num_segmentation_classes} "
        "segmentation classes)"
    )
    return 0
