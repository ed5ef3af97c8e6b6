"""The Predictor: an EndoARSS checkpoint on a device, turning uint8 RGB frames into results.

Everything that touches pixels after the upload happens on the device: the frame goes up as
uint8 (a quarter of the bytes of float32), is resized and normalised there, runs through the
model with its LoRA merged, and only the uint8 class-id mask and the activity probabilities
come back.

The resize and normalisation are `endoarss_ros.data.preprocessing`'s, which ``endoarss eval``
and training validation use too: their scores are this class's outputs.

The mask is computed as the argmax of the segmentation logits at the network resolution,
upsampled to the source resolution by pixel-centre nearest neighbour (the exact mapping of
every mask resize of the project). The decoder already upsamples its features to the network
input size, so the class boundaries are as fine there as the model can place them;
interpolating the logits to the source size instead would refine boundaries by a fraction of a
network pixel at ten times the cost (255 ms vs 24 ms per 1280x1024 frame on a 2-core CPU) and
S times the memory traffic on a GPU. Nearest neighbour also never blends class ids, the
failure jetson-inference #704 reports for bilinear upsampling of masks.

Probabilities are temperature-scaled by the checkpoint's calibration (`.calibration`; 1 when it
has none): the activity probabilities, and the pixel confidences ``mask_min_confidence``
compares. Argmaxes, and so labels and class ids, are the same with or without it.

When the checkpoint stores feature statistics (its ``trust`` entry), a
:class:`~endoarss_ros.trust.feature_tap.FeatureTap` is hooked into the model once at load, before
any ``torch.compile``, and each :class:`Prediction` carries the frame's pooled backbone features
(``features``) from the same forward pass, for the out-of-distribution score. Without
statistics there is no hook and ``features`` is None: nothing is computed or copied.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from endoarss_ros.data.preprocessing import Preprocessing, nearest_indices

from .calibration import calibrated_softmax
from .devices import precision_name, resolve_device, resolve_precision
from .errors import CheckpointLoadError, FrameError, NonFiniteOutput, OutOfMemory, PredictorError
from .overlay import UNLABELED

if TYPE_CHECKING:
    from endoarss_ros.trust.feature_tap import FeatureTap
    from endoarss_ros.trust.ood import FeatureStatistics


@dataclass(frozen=True)
class ModelInfo:
    """What a consumer needs to interpret the results, and which weights produced them."""

    name: str
    checkpoint: Path
    checkpoint_hash: str
    activity_names: tuple[str, ...]
    segmentation_names: tuple[str, ...]
    segmentation_colors: tuple[tuple[int, int, int], ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    activity_temperature: float = 1.0
    segmentation_temperature: float = 1.0
    calibrated: bool = False
    """Whether the checkpoint holds fitted temperatures (else both are 1)."""
    feature_statistics: bool = False
    """Whether the checkpoint holds feature statistics (else no OOD score, no features)."""


@dataclass(frozen=True)
class Prediction:
    """Results for one frame: activity probabilities (float32, sums to 1) and a uint8 mask of
    class ids at the frame's own resolution (255 where no class is confident enough).
    ``features``: the frame's pooled backbone features (float32, shape (D,)) when the
    checkpoint has feature statistics to score them against, else None."""

    activity: np.ndarray
    mask: np.ndarray
    features: np.ndarray | None = None


def checkpoint_hash(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256: names the exact weights in recorded data."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _load(path: Path, device: torch.device):
    # Imported here: the model package pulls timm, which a caller of this module (for example
    # a node validating its parameters) may never need.
    from endoarss_ros.model import CheckpointError, load_checkpoint

    if not path.is_file():
        raise CheckpointLoadError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        return load_checkpoint(path, map_location=device)
    except CheckpointError as exc:
        raise CheckpointLoadError(f"checkpoint {str(path)!r} cannot be used: {exc}") from exc


class Predictor:
    """Loads a checkpoint once, warms it up, then predicts batches of frames.

    Not thread-safe: one thread calls :meth:`predict` (the node's inference thread).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        merge_lora: bool = True,
        threads: int = 0,
        mask_min_confidence: float = 0.0,
        warmup_batch_sizes: Sequence[int] = (1,),
    ) -> None:
        """``threads`` > 0 sets PyTorch's intra-op CPU threads for the whole process: on a
        shared CPU the default (one per core) makes each forward wait for the slowest core,
        and a busy neighbour process then slows it many times over. ``merge_lora=False``
        keeps the adapters separate; it exists to measure what merging saves."""
        if not 0.0 <= mask_min_confidence < 1.0:
            raise PredictorError(
                f"mask_min_confidence must be in [0, 1), got {mask_min_confidence}"
            )
        if threads < 0:
            raise PredictorError(
                f"threads must be 0 (PyTorch's default) or positive, got {threads}"
            )
        if threads:
            torch.set_num_threads(threads)
        path = Path(checkpoint).expanduser()
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.mask_min_confidence = float(mask_min_confidence)

        model, metadata = _load(path, self.device)
        num_seg = len(metadata.segmentation_classes)
        if num_seg >= UNLABELED:
            raise CheckpointLoadError(
                f"checkpoint {str(path)!r} has {num_seg} segmentation classes; a uint8 mask "
                f"holds at most {UNLABELED} (value {UNLABELED} means unlabeled)"
            )
        if merge_lora and not model.merged:
            model.merge()
        elif not merge_lora and model.merged:
            model.unmerge()
        model = model.to(device=self.device, dtype=self.dtype).eval()
        self._feature_statistics = metadata.feature_statistics
        self._tap = self._attach_tap(model)
        self.info = ModelInfo(
            name=model.config.name,
            checkpoint=path,
            checkpoint_hash=checkpoint_hash(path),
            activity_names=tuple(metadata.activity_classes),
            segmentation_names=tuple(metadata.segmentation_classes),
            segmentation_colors=tuple(tuple(c) for c in metadata.segmentation_colors),
            input_size=tuple(metadata.input_size),
            mean=tuple(metadata.mean),
            std=tuple(metadata.std),
            activity_temperature=metadata.temperatures[0],
            segmentation_temperature=metadata.temperatures[1],
            calibrated=metadata.calibration is not None,
            feature_statistics=self._feature_statistics is not None,
        )
        self._model = model
        self._forward: Callable[[torch.Tensor], dict[str, torch.Tensor]] = (
            torch.compile(model, dynamic=False) if compile else model
        )
        self.compiled = bool(compile)
        self._preprocessing = Preprocessing(
            self.info.input_size, self.info.mean, self.info.std, self.device
        )
        self._staging: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._upsampling: OrderedDict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = (
            OrderedDict()
        )
        self.warmup_seconds = self._warm_up(warmup_batch_sizes)

    def _attach_tap(self, model: torch.nn.Module) -> FeatureTap | None:
        """The features hook, when there are statistics to score them against (the loader
        has checked their width against the model's); before any compile, which only traces
        hooks that exist when it runs."""
        if self._feature_statistics is None:
            return None
        from endoarss_ros.trust.feature_tap import FeatureTap

        return FeatureTap(model)

    @property
    def feature_statistics(self) -> FeatureStatistics | None:
        """The checkpoint's feature statistics (the OOD score's reference), or None."""
        return self._feature_statistics

    @property
    def model(self) -> torch.nn.Module:
        """The loaded model (merged unless asked not to, on the device, in the Predictor's
        dtype)."""
        return self._model

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def describe(self) -> str:
        height, width = self.info.input_size
        return (
            f"{self.info.name} ({self.info.checkpoint_hash}) on {self.device} in "
            f"{self.precision}, input {height}x{width}" + (", compiled" if self.compiled else "")
        )

    def _warm_up(self, batch_sizes: Sequence[int]) -> float:
        """Run every batch size once so lazy initialisation, cuDNN autotuning and compilation
        happen at load time and not on the first camera frame."""
        start = time.perf_counter()
        height, width = self.info.input_size
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        for batch in sorted(set(batch_sizes)):
            if batch < 1:
                raise PredictorError(f"warm-up batch sizes must be positive, got {batch}")
            try:
                self.predict([frame] * batch)
            except Exception as exc:
                if not self.compiled:
                    raise
                raise PredictorError(f"torch.compile of the model failed: {exc}") from exc
        return time.perf_counter() - start

    def release_cached_memory(self) -> None:
        """Return cached allocator blocks after an out-of-memory error so the next frame can
        allocate again; a no-op on the CPU."""
        self._staging.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def hardware_id(self) -> str:
        """The device as diagnostics name it: ``cuda:0 (NVIDIA H200)`` or ``cpu``."""
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    def close(self) -> None:
        """Free the model and the device memory it held (a lifecycle cleanup); predict()
        fails afterwards."""
        if self._tap is not None:
            self._tap.remove()
            self._tap = None
        self._model = None
        self._forward = _closed_forward
        self._staging.clear()
        self._upsampling.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def predict(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        """One forward pass over all frames (a stereo pair is a batch of two).

        Frames are H x W x 3 uint8 RGB of any sizes; each result has its frame's size. Running
        out of device memory raises :class:`OutOfMemory` after releasing the cache, so a
        caller can drop the batch and go on.
        """
        try:
            return self._predict(frames)
        except torch.OutOfMemoryError as exc:
            self.release_cached_memory()
            reason = str(exc).splitlines()[0] if str(exc) else "out of memory"
            raise OutOfMemory(
                f"out of {self.device} memory on a batch of {len(frames)}: {reason}"
            ) from exc

    @torch.inference_mode()
    def _predict(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        if not frames:
            return []
        for index, frame in enumerate(frames):
            _check_frame(index, frame)
        batch = torch.cat([self._preprocess(frame) for frame in frames])
        outputs = self._forward(batch.to(self.dtype))
        activity = calibrated_softmax(outputs["activity"], self.info.activity_temperature)
        # Checked on the device and read with the activity (one small transfer, no extra
        # wait): a NaN anywhere must not become a confidence or a class id.
        finite = torch.stack(
            [torch.isfinite(activity).all(), torch.isfinite(outputs["segmentation"]).all()]
        )
        class_ids = self._class_ids(outputs["segmentation"])
        masks = [
            self._upsample(class_ids[i], frame.shape[0], frame.shape[1])
            for i, frame in enumerate(frames)
        ]
        features = None if self._tap is None else self._tap.take()
        # One transfer per tensor; .cpu() waits for the device, so the staging buffers are
        # free again when this returns.
        activity_host = activity.cpu().numpy()
        features_host = None if features is None else features.cpu().numpy()
        finite_host = finite.cpu().tolist()
        for ok, what in zip(finite_host, ("activity", "segmentation"), strict=True):
            if not ok:
                raise NonFiniteOutput(
                    f"the model's {what} outputs are NaN or infinite for a batch of "
                    f"{len(frames)} on {self.device} in {self.precision}; the batch is dropped"
                )
        if self._tap is not None and (features_host is None or len(features_host) != len(frames)):
            raise PredictorError(
                "the feature hook did not run in the forward pass (a model compiled without it?)"
            )
        return [
            Prediction(
                activity=activity_host[i],
                mask=mask.cpu().numpy(),
                features=None if features_host is None else features_host[i],
            )
            for i, mask in enumerate(masks)
        ]

    def _upload(self, frame: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type != "cuda":
            return host
        # A pinned staging buffer per frame shape makes the copy asynchronous without paying
        # for a page-locked allocation on every frame.
        key = tuple(frame.shape)
        staging = self._staging.get(key)
        if staging is None:
            staging = torch.empty(key, dtype=torch.uint8, pin_memory=True)
            self._staging[key] = staging
            while len(self._staging) > 4:
                self._staging.popitem(last=False)
        staging.copy_(host)
        return staging.to(self.device, non_blocking=True)

    def _preprocess(self, frame: np.ndarray) -> torch.Tensor:
        """The network input of one frame, 1 x 3 x H x W float32 on the device."""
        return self._preprocessing(self._upload(frame).permute(2, 0, 1).unsqueeze(0))

    def _class_ids(self, logits: torch.Tensor) -> torch.Tensor:
        """B x S x h x w logits -> B x h x w uint8 class ids at the network resolution."""
        if self.mask_min_confidence <= 0.0:
            # Reducing over the class axis reads S strided planes; with the classes innermost
            # (channels-last) it is one pass, five times faster on a CPU, same ids.
            return (
                logits.contiguous(memory_format=torch.channels_last).argmax(dim=1).to(torch.uint8)
            )
        probabilities = calibrated_softmax(logits, self.info.segmentation_temperature)
        confidence, ids = probabilities.max(dim=1)
        ids = ids.to(torch.uint8)
        ids[confidence < self.mask_min_confidence] = UNLABELED
        return ids

    def _upsample(self, ids: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if tuple(ids.shape) == (height, width):
            return ids
        indices = self._upsampling.get((height, width))
        if indices is None:
            indices = nearest_indices(ids.shape, (height, width), self.device)
            self._upsampling[(height, width)] = indices
            while len(self._upsampling) > 8:
                self._upsampling.popitem(last=False)
        rows, cols = indices
        # Two 1-D gathers (columns on the small mask first) instead of one 2-D advanced
        # index: the same pixels, about six times faster at 1280x1024 on a CPU.
        return ids.index_select(1, cols).index_select(0, rows)


def _closed_forward(batch: torch.Tensor) -> dict[str, torch.Tensor]:
    raise PredictorError("the Predictor was closed; build a new one to predict again")


def _check_frame(index: int, frame: object) -> None:
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame {index} is a {type(frame).__name__}, not a numpy array")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameError(
            f"frame {index} must be H x W x 3 uint8 RGB, got {frame.dtype} of shape {frame.shape}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame {index} is empty: shape {frame.shape}")
