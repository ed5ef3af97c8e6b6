"""Out-of-distribution score: Mahalanobis distance of a frame's pooled backbone features.

Fitted on the training set's features (Lee et al. 2018: class means and one shared covariance;
Fort et al. 2021 on ViT features), the score of a frame is its squared Mahalanobis distance
to the nearest class mean, divided by the same distance's ``quantile`` (0.99) over training
frames held out from the fit. A score of 1 is therefore as far as the 1 % most unusual held-out
frames: the default WARN threshold 1.0 has a false-alarm rate of about 1 % on frames of the
training distribution by construction (a conformal-style threshold), and ERROR at 2.0 is twice
that squared distance. Holding out matters: a frame the covariance was fitted on is closer than
a new frame of the same distribution, by a margin that grows with the dimension.

The covariance is kept in probabilistic-PCA form (Tipping & Bishop 1999): the ``rank`` leading
principal directions with their variances, and one variance for the rest, so

    d2(x) = sum_k (w_k . (x - mu))**2 / lambda_k + |residual of (x - mu)|**2 / sigma2

which is exact for rank >= dim and keeps ViT-B's 1536-d pooled features (CLS and mean patch
token, 768 each) at 1536 x 256 float32, 1.5 MB, instead of a 9.4 MB full precision matrix. The
residual term is where ViM (Wang et al. 2022) finds much of the out-of-distribution signal, so
it is kept rather than dropped. Fitting accumulates sums in float64 (any number of frames, one
pass); scoring one frame is one D x K product, microseconds.

Everything here is numpy: the statistics can be loaded, validated and scored without PyTorch.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from endoarss_ros.validation import ValidationError

FORMAT_VERSION: Final = 1
POOLINGS: Final = ("cls_mean",)
"""How a frame's tokens become one vector: ``cls_mean`` = the final-normed CLS token and the
final-normed mean of the patch tokens, concatenated (2 x embed_dim)."""
ARRAYS: Final = ("means", "components", "variances")
"""The statistics' arrays, stored as tensors; the rest is small JSON metadata."""
MAX_DIM: Final = 16384
MAX_CLASSES: Final = 1024
METADATA_FIELDS: Final = (
    "format_version",
    "pooling",
    "dim",
    "classes",
    "rank",
    "residual_variance",
    "reference",
    "quantile",
    "fitted_frames",
    "holdout_frames",
)
"""The keys :meth:`FeatureStatistics.to_metadata` writes; any other key is refused."""


def pooled_dim(pooling: str, token_width: int) -> int:
    """Length of the pooled vector of tokens ``token_width`` wide, so a loader can check
    stored statistics against a model's config before running it."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return 2 * token_width


class FeatureStatisticsError(ValidationError):
    """Stored feature statistics that cannot be used; the message names the field."""


@dataclass(frozen=True, eq=False)
class FeatureStatistics:
    """A Gaussian model of in-distribution pooled features; :meth:`score` a frame against it.

    ``means`` C x D (one row per class, or one row), ``components`` D x K orthonormal columns,
    ``variances`` K (descending), ``residual_variance`` the variance of every other direction,
    ``reference`` the held-out squared distance at ``quantile``. All float32 except the scalars.
    """

    means: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    reference: float
    quantile: float
    pooling: str = "cls_mean"
    fitted_frames: int = 0
    holdout_frames: int = 0
    if TYPE_CHECKING:
        # Set by __post_init__; declared for the type checker only, so that they are not
        # dataclass fields at run time.
        _means64: np.ndarray = field(init=False)
        _components64: np.ndarray = field(init=False)
        _projected_means: np.ndarray = field(init=False)
        _mean_norms: np.ndarray = field(init=False)
        _inverse: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Cached float64 products: a score is then two small matrix products, and the residual
        # (a difference of large squared norms) keeps its precision.
        means = self.means.astype(np.float64)
        components = self.components.astype(np.float64)
        object.__setattr__(self, "_means64", means)
        object.__setattr__(self, "_components64", components)
        object.__setattr__(self, "_projected_means", means @ components)
        object.__setattr__(self, "_mean_norms", np.einsum("cd,cd->c", means, means))
        object.__setattr__(self, "_inverse", 1.0 / self.variances.astype(np.float64))

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def rank(self) -> int:
        return int(self.components.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.means.nbytes + self.components.nbytes + self.variances.nbytes)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``features`` (N x D, or D) to the
        nearest class mean; N values (float64)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected N x {self.dim} features, got shape {np.shape(features)}")
        z = x @ self._components64  # N x K
        # Per class: z_c = z - P mu_c ; |x - mu_c|^2 = |x|^2 - 2 x.mu_c + |mu_c|^2.
        zc = z[:, None, :] - self._projected_means[None]  # N x C x K
        within = np.einsum("nck,nck,k->nc", zc, zc, self._inverse)
        if self.rank == self.dim:  # no residual directions: what is left is rounding
            return within.min(axis=1)
        total = (
            np.einsum("nd,nd->n", x, x)[:, None]
            - 2.0 * (x @ self._means64.T)
            + self._mean_norms[None]
        )
        residual = np.maximum(total - np.einsum("nck,nck->nc", zc, zc), 0.0)
        return (within + residual / self.residual_variance).min(axis=1)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """:meth:`distance` over the held-out reference: 1.0 = the ``quantile`` of held-out
        training frames."""
        return self.distance(features) / self.reference

    def score(self, features: np.ndarray) -> float:
        """The score of one frame's features (D, or 1 x D)."""
        values = self.scores(features)
        if values.shape != (1,):
            raise ValueError(f"score() takes one frame's features, got {values.shape[0]} rows")
        return float(values[0])

    # Serialisation ----------------------------------------------------------------------

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-safe part: everything but the three arrays (a few hundred bytes)."""
        return {
            "format_version": FORMAT_VERSION,
            "pooling": self.pooling,
            "dim": self.dim,
            "classes": self.num_classes,
            "rank": self.rank,
            "residual_variance": float(self.residual_variance),
            "reference": float(self.reference),
            "quantile": float(self.quantile),
            "fitted_frames": int(self.fitted_frames),
            "holdout_frames": int(self.holdout_frames),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays (float32, C-contiguous), keyed by :data:`ARRAYS`."""
        return {
            name: np.ascontiguousarray(getattr(self, name), dtype=np.float32) for name in ARRAYS
        }

    def to_tensors(self, prefix: str = "") -> dict[str, Any]:
        """:meth:`to_arrays` as CPU torch tensors named ``prefix + name`` (for safetensors)."""
        import torch

        return {prefix + k: torch.from_numpy(v.copy()) for k, v in self.to_arrays().items()}

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, Any],
        metadata: Mapping[str, Any],
        *,
        field: str = "trust.ood",
        error: type[ValidationError] = FeatureStatisticsError,
    ) -> FeatureStatistics:
        """Rebuild from :meth:`to_arrays`/:meth:`to_tensors` values (numpy arrays or tensors)
        and :meth:`to_metadata`, checking everything; a bad value raises ``error`` naming
        ``field.<name>``, so a checkpoint loader can refuse it in one line."""
        return _parse(arrays, metadata, field, error)

    @classmethod
    def from_tensors(
        cls,
        tensors: Mapping[str, Any],
        metadata: Mapping[str, Any],
        *,
        prefix: str = "",
        field: str = "trust.ood",
        error: type[ValidationError] = FeatureStatisticsError,
    ) -> FeatureStatistics:
        """:meth:`from_arrays` of the tensors named ``prefix + name``."""
        arrays = {name: tensors[prefix + name] for name in ARRAYS if prefix + name in tensors}
        return _parse(arrays, metadata, field, error)

    def to_json(self) -> dict[str, Any]:
        """One JSON-safe document: the metadata plus each array as base64 of little-endian
        float32 with its shape (for storage in JSON metadata alone; 4/3 of the raw size)."""
        document = self.to_metadata()
        document["arrays"] = {
            name: {
                "shape": list(array.shape),
                "float32_le": base64.b64encode(array.astype("<f4").tobytes()).decode("ascii"),
            }
            for name, array in self.to_arrays().items()
        }
        return document

    @classmethod
    def from_json(
        cls,
        document: Any,
        *,
        field: str = "trust.ood",
        error: type[ValidationError] = FeatureStatisticsError,
    ) -> FeatureStatistics:
        if not isinstance(document, Mapping):
            raise error(field, f"must be a mapping, got {type(document).__name__}")
        encoded = document.get("arrays")
        if not isinstance(encoded, Mapping):
            raise error(f"{field}.arrays", "must be a mapping of base64 float32 arrays")
        arrays: dict[str, np.ndarray] = {}
        for name in ARRAYS:
            entry = encoded.get(name)
            where = f"{field}.arrays.{name}"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("float32_le"), str):
                raise error(where, "must be a mapping with 'shape' and 'float32_le'")
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_DIM for n in shape
            ):
                raise error(f"{where}.shape", f"must be a list of sizes, got {shape!r}")
            try:
                raw = base64.b64decode(entry["float32_le"], validate=True)
            except ValueError as exc:
                raise error(f"{where}.float32_le", f"is not valid base64 ({exc})") from None
            if len(raw) != 4 * math.prod(shape):
                raise error(
                    f"{where}.float32_le",
                    f"holds {len(raw)} bytes, not the {4 * math.prod(shape)} of shape {shape}",
                )
            arrays[name] = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
        metadata = {k: v for k, v in document.items() if k != "arrays"}
        return _parse(arrays, metadata, field, error)


def _parse(
    arrays: Mapping[str, Any],
    metadata: Mapping[str, Any],
    field: str,
    error: type[ValidationError],
) -> FeatureStatistics:
    def fail(name: str, message: str) -> ValidationError:
        return error(f"{field}.{name}", message)

    if not isinstance(metadata, Mapping):
        raise error(field, f"must be a mapping, got {type(metadata).__name__}")
    unknown = sorted(str(k) for k in metadata if k not in METADATA_FIELDS)
    if unknown:
        raise fail(unknown[0], f"is not a known field (known: {', '.join(METADATA_FIELDS)})")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise fail("format_version", f"must be {FORMAT_VERSION}, got {version!r}")
    pooling = metadata.get("pooling")
    if pooling not in POOLINGS:
        raise fail("pooling", f"must be one of {', '.join(POOLINGS)}, got {pooling!r}")

    def number(name: str, low: float, high: float, *, low_open: bool = True) -> float:
        value = metadata.get(name)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not (value > low if low_open else value >= low)
            or value > high
        ):
            bound = "(" if low_open else "["
            raise fail(name, f"must be a number in {bound}{low:g}, {high:g}], got {value!r}")
        return float(value)

    def count(name: str) -> int:
        value = metadata.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(name, f"must be a non-negative integer, got {value!r}")
        return value

    residual = number("residual_variance", 0.0, 1e30)
    reference = number("reference", 0.0, 1e30)
    quantile = number("quantile", 0.0, 1.0)
    loaded: dict[str, np.ndarray] = {}
    for name, ndim in zip(ARRAYS, (2, 2, 1), strict=True):
        if name not in arrays:
            raise fail(name, "is missing")
        value = arrays[name]
        # The dtype is read before any conversion: numpy has no bfloat16, and a stored
        # array of another precision is not what to_arrays() writes.
        dtype = str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")
        shape = tuple(getattr(value, "shape", ()))
        if dtype != "float32" or len(shape) != ndim or 0 in shape:
            raise fail(
                name, f"must be a non-empty {ndim}-d float32 array, got {dtype} of shape {shape}"
            )
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if not np.isfinite(value).all():
            raise fail(name, "holds NaN or infinite values")
        loaded[name] = np.ascontiguousarray(value, dtype=np.float32)
    means, components, variances = (loaded[n] for n in ARRAYS)
    classes, dim = means.shape
    if dim > MAX_DIM or classes > MAX_CLASSES:
        raise fail("means", f"shape {means.shape} exceeds {MAX_CLASSES} x {MAX_DIM}")
    if components.shape[0] != dim or components.shape[1] > dim:
        raise fail(
            "components", f"must be {dim} x K with K <= {dim}, got {tuple(components.shape)}"
        )
    if variances.shape != (components.shape[1],):
        raise fail("variances", f"must hold {components.shape[1]} values, got {variances.size}")
    if (variances <= 0).any():
        raise fail("variances", "must all be positive")
    gram = components.T.astype(np.float64) @ components
    if np.abs(gram - np.eye(gram.shape[0])).max() > 1e-3:
        raise fail("components", "must have orthonormal columns")
    for name, expected in (("dim", dim), ("classes", classes), ("rank", components.shape[1])):
        if name in metadata and metadata[name] != expected:
            raise fail(name, f"says {metadata[name]!r}, the arrays hold {expected}")
    return FeatureStatistics(
        means,
        components,
        variances,
        residual,
        reference,
        quantile,
        pooling=pooling,
        fitted_frames=count("fitted_frames"),
        holdout_frames=count("holdout_frames"),
    )


class FeatureAccumulator:
    """Collects pooled features in one pass and fits :class:`FeatureStatistics`.

    Every ``holdout_every``-th row (up to ``max_holdout`` rows) is set aside, not fitted, to
    measure the reference distance; the others only update float64 sums (per-class sums and
    one D x D scatter matrix), so memory does not grow with the number of frames.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int = 1,
        *,
        holdout_every: int = 5,
        max_holdout: int = 4096,
        pooling: str = "cls_mean",
    ) -> None:
        if not 1 <= dim <= MAX_DIM:
            raise ValueError(f"dim must be in [1, {MAX_DIM}], got {dim}")
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
        if holdout_every < 2:
            raise ValueError(f"holdout_every must be at least 2, got {holdout_every}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.dim = dim
        self.num_classes = num_classes
        self.holdout_every = holdout_every
        self.max_holdout = max_holdout
        self.pooling = pooling
        self._counts = np.zeros(num_classes, dtype=np.int64)
        self._sums = np.zeros((num_classes, dim), dtype=np.float64)
        self._scatter = np.zeros((dim, dim), dtype=np.float64)
        self._holdout: list[np.ndarray] = []
        self._held = 0
        self._seen = 0

    @property
    def fitted_rows(self) -> int:
        return int(self._counts.sum())

    def add(self, features: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Rows of ``features`` (N x D); ``labels`` (N class ids) when fitting class means."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected N x {self.dim} features, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features hold NaN or infinite values")
        if labels is None:
            if self.num_classes != 1:
                raise ValueError(f"labels are needed to fit {self.num_classes} class means")
            y = np.zeros(len(x), dtype=np.int64)
        else:
            y = np.asarray(labels, dtype=np.int64).reshape(-1)
            if y.shape != (len(x),) or (y < 0).any() or (y >= self.num_classes).any():
                raise ValueError(
                    f"labels must be {len(x)} class ids in [0, {self.num_classes}), got {labels}"
                )
        index = self._seen + np.arange(len(x))
        self._seen += len(x)
        held = (index % self.holdout_every == 0) & (
            self._held + np.cumsum(index % self.holdout_every == 0) <= self.max_holdout
        )
        if held.any():
            self._holdout.append(np.column_stack([x[held], y[held]]))
            self._held += int(held.sum())
        x, y = x[~held], y[~held]
        np.add.at(self._sums, y, x)
        self._counts += np.bincount(y, minlength=self.num_classes)
        self._scatter += x.T @ x

    def finish(self, rank: int = 256, quantile: float = 0.99) -> FeatureStatistics:
        """The statistics of everything added; needs more fitted rows than classes + 1 and at
        least one held-out row."""
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if rank < 1:
            raise ValueError(f"rank must be positive, got {rank}")
        used = self._counts > 0
        fitted = self.fitted_rows
        classes = int(used.sum())
        if fitted <= classes + 1 or not self._holdout:
            raise ValueError(
                f"too few frames: {fitted} fitted and {self._held} held out; the fit needs "
                f"more than {classes + 1} and at least one held out"
            )
        means = np.zeros_like(self._sums)
        means[used] = self._sums[used] / self._counts[used, None]
        # Classes never seen keep no mean: the nearest seen class decides their frames.
        within = self._scatter - np.einsum(
            "c,cd,ce->de", self._counts[used], means[used], means[used]
        )
        covariance = within / (fitted - classes)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
        eigenvalues = np.maximum(eigenvalues, 0.0)
        total = float(eigenvalues.sum())
        floor = max(total / self.dim * 1e-4, 1e-12)
        # No more directions than the data can estimate (fitted - classes of them are free).
        keep = int(min(rank, self.dim, max(1, fitted - classes)))
        rest = eigenvalues[keep:]
        residual = float(rest.mean()) if rest.size else floor
        residual = max(residual, floor)
        variances = np.maximum(eigenvalues[:keep], residual)
        stats = FeatureStatistics(
            means[used].astype(np.float32),
            np.ascontiguousarray(eigenvectors[:, :keep], dtype=np.float32),
            variances.astype(np.float32),
            residual,
            1.0,
            quantile,
            pooling=self.pooling,
            fitted_frames=fitted,
            holdout_frames=self._held,
        )
        held = np.concatenate(self._holdout)[:, : self.dim]
        reference = float(np.quantile(stats.distance(held), quantile))
        return FeatureStatistics(
            stats.means,
            stats.components,
            stats.variances,
            residual,
            max(reference, 1e-12),
            quantile,
            pooling=self.pooling,
            fitted_frames=fitted,
            holdout_frames=self._held,
        )
