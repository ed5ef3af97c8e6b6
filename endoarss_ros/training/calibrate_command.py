"""``endoarss calibrate CHECKPOINT (-o OUT | --in-place)``: fit what the Predictor needs to say
how far to trust each frame's answer, and store it in a copy of the checkpoint (or the
checkpoint itself).

Two fits, both by default (``--only`` picks one; the other part of the file is kept as it is):

- ``temperature``: temperature scaling, so the confidences match the accuracy. It reads the
  validation split of the data the checkpoint was trained with (as training chose it), or of
  ``--config`` / ``--data`` / ``--set`` as ``endoarss eval`` takes them, plus ``--copies``
  mildly corrupted copies of each frame (severities 1-2 of the corruption suite), and prints
  ECE before and after scaling on those frames; ``endoarss eval`` measures it on held-out ones.
- ``ood``: the feature statistics of the out-of-distribution score (`endoarss_ros.trust.ood`),
  on at most ``--ood-frames`` frames of the training split of the same data, a fifth of them
  held out to set the score's reference (its 99th percentile). It prints the frames, the
  feature width, the rank kept and that percentile.

The weights are written unchanged; the file is replaced atomically.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from endoarss_ros.cli_options import OptionError
from endoarss_ros.training.eval_command import _int_list, add_data_options, data_and_seed

FITS = ("temperature", "ood")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fit temperature scaling (validation split) and the out-of-distribution feature "
        "statistics (training split) of a checkpoint and store them in it."
    )
    parser.add_argument("checkpoint", type=Path, help="model checkpoint (.safetensors)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--out", type=Path, help="calibrated checkpoint to write")
    target.add_argument(
        "--in-place", action="store_true", help="replace CHECKPOINT itself (atomically)"
    )
    parser.add_argument(
        "--only",
        choices=FITS,
        default=None,
        help="fit only the temperatures or only the feature statistics, keeping what the "
        "checkpoint holds of the other (default: both)",
    )
    add_data_options(parser)
    parser.add_argument(
        "--split",
        default=None,
        help="split to fit the temperatures on (default: the validation split)",
    )
    parser.add_argument(
        "--copies",
        type=float,
        default=None,
        help="temperatures: mildly corrupted copies per frame, on average (0.25: a quarter of "
        "the frames get one; 0: clean frames only)",
    )
    parser.add_argument(
        "--corruptions", default=None, help="comma-separated corruption names (default: all)"
    )
    parser.add_argument("--severities", default="1,2", help="corruption severities (1,2)")
    parser.add_argument(
        "--ood-frames",
        type=int,
        default=None,
        metavar="N",
        help="feature statistics: training frames to fit on at most, a fixed-seed random "
        "subset (default 2000)",
    )
    parser.add_argument(
        "--ood-rank",
        type=int,
        default=None,
        metavar="K",
        help="feature statistics: principal directions kept (default 256, at most the "
        "feature width)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from endoarss_ros.data.corruptions import CORRUPTIONS
    from endoarss_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from endoarss_ros.training.calibration import (
        DEFAULT_COPIES,
        DEFAULT_OOD_FRAMES,
        DEFAULT_OOD_RANK,
        calibrate_checkpoint,
        ece_summary,
        fit_ood_statistics,
    )
    from endoarss_ros.training.distributed import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out: Path = args.checkpoint if args.in_place else args.out
    if not args.in_place and out.resolve() == args.checkpoint.resolve():
        raise OptionError("--out", "is the checkpoint itself; pass --in-place to replace it")
    fits = FITS if args.only is None else (args.only,)
    copies = DEFAULT_COPIES if args.copies is None else args.copies
    if not (math.isfinite(copies) and 0 <= copies <= 100):
        raise OptionError("--copies", f"must be a number in [0, 100], got {copies}")
    corruptions = (
        list(CORRUPTIONS)
        if args.corruptions is None
        else [c.strip() for c in args.corruptions.split(",") if c.strip()]
    )
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown or not corruptions:
        raise OptionError(
            "--corruptions",
            f"names unknown {unknown or 'nothing'}; known: {', '.join(CORRUPTIONS)}",
        )
    severities = _int_list(args.severities, "--severities")
    if not severities or any(s not in (1, 2, 3, 4, 5) for s in severities):
        raise OptionError("--severities", f"must lie in 1..5, got {severities}")
    ood_frames = DEFAULT_OOD_FRAMES if args.ood_frames is None else args.ood_frames
    if ood_frames < 10:
        raise OptionError("--ood-frames", f"must be at least 10, got {ood_frames}")
    ood_rank = DEFAULT_OOD_RANK if args.ood_rank is None else args.ood_rank
    if ood_rank < 1:
        raise OptionError("--ood-rank", f"must be positive, got {ood_rank}")
    if args.batch_size < 1:
        raise OptionError("--batch-size", f"must be positive, got {args.batch_size}")
    data, seed = data_and_seed(args)
    device = resolve_device(args.device)

    if "temperature" in fits:
        result = calibrate_checkpoint(
            args.checkpoint,
            data,
            seed=seed,
            device=device,
            split=args.split,
            copies=copies,
            corruptions=corruptions,
            severities=severities,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=not args.quiet,
        )
        model, metadata = result.model, result.metadata
        calibration = metadata.calibration
        assert calibration is not None
        fit = calibration.fit
        print(
            f"fitted on {result.frames} frames: {fit['frames']} of the {fit['split']} of "
            f"{fit['data']} and {result.frames - fit['frames']} corrupted copies (severities "
            f"{','.join(map(str, severities))})"
        )
        if result.previous is not None:
            print(
                f"  replacing temperatures {result.previous.activity_temperature:.4g} "
                f"(activity), {result.previous.segmentation_temperature:.4g} (segmentation)"
            )
        print(
            f"  temperature {calibration.activity_temperature:.4f} (activity), "
            f"{calibration.segmentation_temperature:.4f} (segmentation)"
        )
        for name, (before, after) in ece_summary(result.metrics).items():
            print(f"  {name:38s} {before:.4f} before scaling, {after:.4f} after")
    else:
        model, metadata = load_checkpoint(args.checkpoint, map_location=device)

    if "ood" in fits:
        previous = metadata.feature_statistics
        trust = fit_ood_statistics(
            model,
            metadata,
            data,
            seed=seed,
            device=device,
            frames=ood_frames,
            rank=ood_rank,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=not args.quiet,
            name=args.checkpoint,
        )
        metadata = replace(metadata, trust=trust)
        stats, fit = trust.ood, trust.ood_fit
        print(
            f"feature statistics fitted on {fit['frames']} of the {fit['split_frames']} frames "
            f"of the {fit['split']} of {fit['data']}: {stats.fitted_frames} fitted, "
            f"{stats.holdout_frames} held out"
        )
        if previous is not None:
            print(f"  replacing statistics of rank {previous.rank} on {previous.dim} features")
        print(
            f"  {stats.dim} features ({stats.pooling}), rank {stats.rank}, "
            f"{stats.num_classes} class mean(s), {stats.nbytes / 1024:.0f} kB"
        )
        print(
            f"  held-out {stats.quantile * 100:g}th percentile of the squared Mahalanobis "
            f"distance: {stats.reference:.4g} (the score's 1.0)"
        )
    save_checkpoint(out, model, metadata)
    print(f"calibrated checkpoint: {out}")
    return 0
