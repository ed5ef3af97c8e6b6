"""What the frame pipeline can be asked to do, described once.

The perception node's parameters (:mod:`endoarss_ros.ros.parameters`), the options of
`endoarss bag infer` and the checks of parameter files are all generated from these sections,
so an option has one name, one default, one rule and one description everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Final

from endoarss_ros.trust.assessment import TrustConfig
from endoarss_ros.validation import (
    Boolean,
    Choice,
    Integer,
    Number,
    Pattern,
    Section,
    Text,
    setting,
)

from .devices import DEVICE_CHOICES, PRECISIONS
from .smoothing import SmoothingConfig

INPUT_MODES: Final = ("mono", "stereo", "side_by_side")

_DEVICE: Final = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(text: str) -> str | None:
    text = text.strip().lower()
    return text if _DEVICE.fullmatch(text) else None


@dataclass(frozen=True)
class PredictorOptions(Section):
    """How the checkpoint is loaded and run (read when the Predictor is built)."""

    checkpoint: str = setting(
        "", Text(strip=True), doc="EndoARSS checkpoint (.safetensors) to load; required"
    )
    device: str = setting(
        "auto",
        Pattern(f"one of {', '.join(DEVICE_CHOICES)}", _device),
        doc="auto (the first CUDA device, else the CPU) | cpu | cuda | cuda:N",
    )
    precision: str = setting(
        "auto",
        Choice(PRECISIONS, fold_case=True),
        doc="auto (bf16, or fp16 on GPUs without bf16; fp32 on the CPU) | fp32 | fp16 | bf16",
    )
    compile: bool = setting(
        False, Boolean(), doc="torch.compile the model when it is loaded (slower start)"
    )
    cpu_threads: int = setting(
        0,
        Integer(0, 1024),
        doc="PyTorch intra-op CPU threads; 0 = PyTorch's default (one per core)",
    )
    mask_min_confidence: float = setting(
        0.0,
        Number(0, 1, high_open=True),
        doc="pixels whose class probability is below this become 255 (unlabeled); 0 = never",
    )

    def validate(self) -> None:
        if self.checkpoint and not self.checkpoint.endswith(".safetensors"):
            self.fail(
                "checkpoint", f"must name a .safetensors checkpoint file, got {self.checkpoint!r}"
            )


@dataclass(frozen=True)
class PipelineConfig(Section):
    """What happens to each frame around the Predictor: stereo pairing or splitting, averaging
    the eyes' activity, temporal smoothing, overlays, the trust of each frame."""

    NESTED: ClassVar = {"smoothing": SmoothingConfig, "trust": TrustConfig}

    input_mode: str = setting(
        "mono",
        Choice(INPUT_MODES, fold_case=True),
        doc="mono | stereo (left and right topics, paired by stamp) | side_by_side (one "
        "left|right frame)",
    )
    stereo_slop_ms: float = setting(
        15.0,
        Number(0, 1000, low_open=True, unit="ms"),
        doc="largest stamp difference of a stereo pair",
    )
    max_frame_pixels: int = setting(
        7680 * 4320,
        Integer(0, 2**31 - 1),
        doc="frames with more pixels are dropped unread (bad_input), before any copy; "
        "0 = any size (default: 8K UHD)",
        runtime=True,
    )
    overlay_alpha: float = setting(
        0.5, Number(0, 1), doc="opacity of class colours in the overlay", runtime=True
    )
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)

    @property
    def stereo(self) -> bool:
        """Two eyes per frame (two topics, or one side-by-side frame)."""
        return self.input_mode != "mono"

    @property
    def streams(self) -> tuple[str, ...]:
        """Output prefix of each eye: ``("",)`` mono, ``("left/", "right/")`` stereo."""
        return ("left/", "right/") if self.stereo else ("",)
