"""Pretrained DINOv2 weights from local files, with every key accounted for.

Four key layouts are recognised (``detect_layout``):

``meta``
    Meta's ``dinov2_vit*14[_reg4]_pretrain.pth``: a plain state dict (``cls_token``,
    ``pos_embed``, ``mask_token``, ``register_tokens``, ``blocks.N.*``, SwiGLU ``w12``/``w3``
    for ViT-g). Read with ``torch.load(weights_only=True)`` only, never a full unpickle.
``timm``
    timm's safetensors (``patch_embed.proj.weight``, ``reg_token``, no ``mask_token``).
``hf``
    Hugging Face transformers ``Dinov2Model``/``Dinov2WithRegistersModel`` safetensors
    (``embeddings.*``, ``encoder.layer.N.attention.attention.query.*``, ``layernorm.*``).
``depth_anything``
    Depth-Anything checkpoints: the DINOv2 encoder under ``pretrained.``, the DPT depth head
    under ``depth_head.`` (not used here, reported as ignored).

``hf`` and ``depth_anything`` are first rewritten into the ``meta`` layout; ``meta`` and
``timm`` then go through timm's own ``checkpoint_filter_fn``, which converts Meta's keys
(drops ``mask_token``, the iBOT masking embedding unused at inference; ``register_tokens`` ->
``reg_token`` with the CLS position folded into ``cls_token``; SwiGLU names). A position
table for another grid than the model's ``img_size`` is refused, not resampled: the backbone
interpolates the stored table at run time as Meta does, from the table the weights came
with. The result must then match the frozen ViT key for key and shape for shape; anything
else raises :class:`PretrainedWeightsError` naming the file and the keys.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from .config import PATCH_SIZE
from .lora import is_adapter_parameter

LAYOUTS = ("timm", "meta", "hf", "depth_anything")

_SHOW = 12  # keys listed per category in an error message


class PretrainedWeightsError(ValueError):
    """A weight file cannot be read or does not fit the backbone; the message names the keys."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did: ``ignored`` are file keys dropped on purpose."""

    path: Path
    layout: str
    loaded: int
    ignored: tuple[str, ...]


def _key_list(keys: set[str] | list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < size < path.stat().st_size


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat ``name -> tensor`` dict from safetensors or a tensors-only torch file."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no such file")
    try:
        if _is_safetensors(path):
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader error becomes one readable message
        raise PretrainedWeightsError(
            f"{path}: not a safetensors file or a tensors-only torch file ({exc})"
        ) from exc
    if not isinstance(state, dict):
        raise PretrainedWeightsError(
            f"{path}: expected a flat dict of tensors, got {type(state).__name__}"
        )
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not all(isinstance(k, str) for k in state):
        raise PretrainedWeightsError(
            f"{path}: expected a flat dict of tensors; non-tensor entries: {_key_list(not_tensors)}"
        )
    return state


def detect_layout(state: dict[str, torch.Tensor]) -> str | None:
    """The key layout of a DINOv2 state dict (one of :data:`LAYOUTS`), or None."""
    keys = state.keys()
    if any(k.startswith("pretrained.") for k in keys):
        return "depth_anything"
    if "embeddings.patch_embeddings.projection.weight" in keys:
        return "hf"
    if "mask_token" in keys or "register_tokens" in keys:
        return "meta"
    if "patch_embed.proj.weight" in keys:
        return "timm"
    return None


_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.w12",
    "mlp.weights_out": "mlp.w3",
}
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_QKV = re.compile(r"^attention\.attention\.(query|key|value)\.(weight|bias)$")


def hf_to_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``Dinov2Model`` state dict to Meta's keys.

    Separate query/key/value projections are concatenated into ``qkv`` (in that order, as
    Meta's and timm's attention split them). Keys it does not know are kept unchanged, so they
    surface as unexpected keys under their original names.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, tuple[str, torch.Tensor]]] = {}
    for key, value in state.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        layer = _HF_LAYER.match(key)
        if layer is None:
            out[key] = value
            continue
        index, rest = int(layer.group(1)), layer.group(2)
        part = _HF_QKV.match(rest)
        if part is not None:
            qkv.setdefault((index, part.group(2)), {})[part.group(1)] = (key, value)
            continue
        module, _, leaf = rest.rpartition(".")
        if rest in _HF_BLOCK:  # parameters without a leaf name (layer-scale lambdas)
            out[f"blocks.{index}.{_HF_BLOCK[rest]}"] = value
        elif module in _HF_BLOCK:
            out[f"blocks.{index}.{_HF_BLOCK[module]}.{leaf}"] = value
        else:
            out[key] = value
    for (index, leaf), parts in sorted(qkv.items()):
        if set(parts) == {"query", "key", "value"}:
            out[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat(
                [parts[name][1] for name in ("query", "key", "value")], dim=0
            )
        else:  # incomplete: keep the originals so the error names them
            out.update(dict(parts.values()))
    return out


_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")


def _unchunk_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DINOv2 training checkpoints may group blocks in FSDP chunks: blocks.<chunk>.<index>.*
    if not any(_CHUNKED_BLOCK.match(k) for k in state):
        return state
    out = {}
    for key, value in state.items():
        match = _CHUNKED_BLOCK.match(key)
        out[f"blocks.{match.group(1)}.{match.group(2)}" if match else key] = value
    return out


def _resolve_vit(target: nn.Module) -> tuple[VisionTransformer, nn.Module]:
    owner = target
    backbone = getattr(target, "backbone", None)
    if backbone is not None:
        owner = backbone
    vit = getattr(owner, "vit", owner)
    if not isinstance(vit, VisionTransformer):
        raise TypeError(
            f"load_pretrained needs an EndoARSS model, a DinoV2Backbone or a timm "
            f"VisionTransformer, got {type(target).__name__}"
        )
    if getattr(owner, "merged", False):
        raise ValueError("cannot load pretrained weights into a merged model; unmerge() first")
    return vit, owner


def convert_to_timm(
    state: dict[str, torch.Tensor],
    vit: VisionTransformer,
    layout: str,
    path: Path | str = "<state dict>",
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Rewrite ``state`` (in ``layout``) to the keys of ``vit``; returns it and ignored keys."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    state = dict(state)
    ignored: list[str] = []
    if layout == "depth_anything":
        ignored = sorted(k for k in state if k.startswith("depth_head."))
        stray = sorted(k for k in state if not k.startswith(("pretrained.", "depth_head.")))
        if stray:
            raise PretrainedWeightsError(
                f"{path}: Depth-Anything checkpoint has keys outside 'pretrained.' and "
                f"'depth_head.': {_key_list(stray)}"
            )
        state = {
            k[len("pretrained.") :]: v for k, v in state.items() if k.startswith("pretrained.")
        }
        layout = "meta"
    elif layout == "hf":
        state = hf_to_meta(state)
        layout = "meta"
    if layout == "meta":
        state = _unchunk_meta(state)
        if "mask_token" not in state:
            raise PretrainedWeightsError(
                f"{path}: missing key(s) for the Meta DINOv2 layout: mask_token"
            )
        ignored.append("mask_token")
    elif "mask_token" in state:
        raise PretrainedWeightsError(f"{path}: unexpected key(s): mask_token")

    expected = {k: v.shape for k, v in vit.state_dict().items() if not is_adapter_parameter(k)}
    # Refuse what timm's filter would misread: another number of register tokens changes the
    # position embedding's prefix, so it would be resampled as if it were patch positions.
    reg_key = "register_tokens" if layout == "meta" else "reg_token"
    file_regs = state[reg_key].shape[1] if reg_key in state else 0
    model_regs = vit.reg_token.shape[1] if vit.reg_token is not None else 0
    if file_regs != model_regs:
        raise PretrainedWeightsError(
            f"{path}: register tokens differ: the file has {file_regs} ({reg_key}), "
            f"the model {model_regs}"
        )
    # Refuse what timm's filter would silently adapt: another patch size or embedding width.
    for key in ("patch_embed.proj.weight", "cls_token"):
        if key in state and key in expected and state[key].shape != expected[key]:
            raise PretrainedWeightsError(
                f"{path}: shape mismatch: {key} is {tuple(state[key].shape)} in the file, "
                f"{tuple(expected[key])} in the model"
            )
    _check_pos_embed(state, vit, layout, path)
    try:
        converted = checkpoint_filter_fn(state, vit)
    except Exception as exc:
        raise PretrainedWeightsError(f"{path}: cannot convert the {layout} layout: {exc}") from exc
    return converted, tuple(ignored)


def _check_pos_embed(
    state: dict[str, torch.Tensor], vit: VisionTransformer, layout: str, path: Path | str
) -> None:
    """Refuse a position table for another grid than the model's ``img_size`` declares.

    timm's filter would resample it silently, and the model would then interpolate the
    resampled table again at run time: features differ from the weights' own, with no error.
    """
    if "pos_embed" not in state:
        return  # reported as a missing key
    table = state["pos_embed"]
    expected = vit.pos_embed.shape
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != expected[2]:
        raise PretrainedWeightsError(
            f"{path}: shape mismatch: pos_embed is {tuple(table.shape)} in the file, "
            f"{tuple(expected)} in the model"
        )
    # Meta's layout always holds the CLS position first; timm's only without no_embed_class.
    file_prefix = 1 if layout == "meta" or not vit.no_embed_class else 0
    positions = table.shape[1] - file_prefix
    grid = tuple(vit.patch_embed.grid_size)
    if positions != grid[0] * grid[1]:
        found = describe_position_table(table.shape[1], file_prefix)
        declared = f"{grid[0]}x{grid[1]}" + (" (+1 class token)" if file_prefix else "")
        hint = "set backbone.img_size to the size the weights were trained at"
        if found.startswith(f"a {grid[0]}x{grid[1]} grid"):  # the grid fits, the class row not
            hint = "a file of another layout or DINOv2 variant (registers)?"
        raise PretrainedWeightsError(
            f"{path}: shape mismatch: pos_embed {tuple(table.shape)} holds {found}; "
            f"the model's backbone.img_size {grid[0] * PATCH_SIZE} declares {declared} ({hint})"
        )


def describe_position_table(rows: int, class_rows: int = 1) -> str:
    """The grid a position table of ``rows`` rows holds: ``a 37x37 grid (+1 class token)`` for
    1370 rows, ``a 37x37 grid (no class token)`` for 1369; ``class_rows`` (the rows the layout
    expects before the patch positions) decides where both readings fit (only 1 row)."""
    readings = []
    for prefix in (class_rows, 1 - class_rows):
        side = math.isqrt(max(rows - prefix, 0))
        if side > 0 and side * side == rows - prefix:
            readings.append(
                f"a {side}x{side} grid " + ("(+1 class token)" if prefix else "(no class token)")
            )
    if readings:
        return readings[0]
    return f"{rows} rows, no square grid with or without a class token"


def check_keys(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Size], path: Path | str
) -> None:
    """Raise unless ``state`` has exactly the ``expected`` keys and shapes."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k])})"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing key(s): {_key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s): {_key_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_key_list(mismatched)}")
    if problems:
        raise PretrainedWeightsError(f"{path}: " + "; ".join(problems))


def load_pretrained(target: nn.Module, path: str | Path, layout: str | None = None) -> LoadReport:
    """Load a local DINOv2 weight file into the frozen ViT of ``target``.

    ``target`` is an :class:`~endoarss_ros.model.endoarss.EndoARSS`, a
    :class:`~endoarss_ros.model.backbone.DinoV2Backbone` or a timm ``VisionTransformer``.
    ``layout`` is detected from the keys unless given. Adapters and heads are untouched.
    """
    path = Path(path)
    vit, _ = _resolve_vit(target)
    state = read_state_dict(path)
    detected = detect_layout(state)
    if layout is None:
        if detected is None:
            raise PretrainedWeightsError(
                f"{path}: not a DINOv2 state dict in a known layout ({', '.join(LAYOUTS)}); "
                f"keys: {_key_list(list(state))}"
            )
        layout = detected
    converted, ignored = convert_to_timm(state, vit, layout, path)
    expected = {k: v.shape for k, v in vit.state_dict().items() if not is_adapter_parameter(k)}
    check_keys(converted, expected, path)
    with torch.no_grad():
        result = vit.load_state_dict(converted, strict=False)
    leftover = [k for k in result.missing_keys if not is_adapter_parameter(k)]
    if leftover or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{path}: load mismatch: missing {_key_list(leftover)}, "
            f"unexpected {_key_list(result.unexpected_keys)}"
        )
    return LoadReport(path=path, layout=layout, loaded=len(converted), ignored=ignored)
