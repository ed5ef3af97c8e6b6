"""``endoarss calibrate CHECKPOINT (-o OUT | --in-place)``: fit temperature scaling and store it
in a copy of the checkpoint (or the checkpoint itself), so the Predictor's confidences match
its accuracy.

The fit reads the validation split of the data the checkpoint was trained with (as training
chose it), or of ``--config`` / ``--data`` / ``--set`` as ``endoarss eval`` takes them, plus
``--copies`` mildly corrupted copies of each frame (severities 1-2 of the corruption suite).
It prints ECE before and after scaling on those frames; ``endoarss eval`` measures it on
held-out ones. The weights are written unchanged; the file is replaced atomically.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from endoarss_ros.cli_options import OptionError
from endoarss_ros.training.eval_command import _int_list, add_data_options, data_and_seed


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="model checkpoint (.safetensors)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-o", "--out", type=Path, help="calibrated checkpoint to write")
    target.add_argument(
        "--in-place", action="store_true", help="replace CHECKPOINT itself (atomically)"
    )
    add_data_options(parser)
    parser.add_argument(
        "--split", default=None, help="split to fit on (default: the validation split)"
    )
    parser.add_argument(
        "--copies",
        type=float,
        default=None,
        help="mildly corrupted copies per frame, on average (0.25: a quarter of the frames get "
        "one; 0: clean frames only)",
    )
    parser.add_argument(
        "--corruptions", default=None, help="comma-separated corruption names (default: all)"
    )
    parser.add_argument("--severities", default="1,2", help="corruption severities (1,2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from endoarss_ros.data.corruptions import CORRUPTIONS
    from endoarss_ros.model.checkpoint import save_checkpoint
    from endoarss_ros.training.calibration import (
        DEFAULT_COPIES,
        calibrate_checkpoint,
        ece_summary,
    )
    from endoarss_ros.training.distributed import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out: Path = args.checkpoint if args.in_place else args.out
    if not args.in_place and out.resolve() == args.checkpoint.resolve():
        raise OptionError("--out", "is the checkpoint itself; pass --in-place to replace it")
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
    data, seed = data_and_seed(args)
    result = calibrate_checkpoint(
        args.checkpoint,
        data,
        seed=seed,
        device=resolve_device(args.device),
        split=args.split,
        copies=copies,
        corruptions=corruptions,
        severities=severities,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    save_checkpoint(out, result.model, result.metadata)
    calibration = result.metadata.calibration
    assert calibration is not None
    fit = calibration.fit
    print(
        f"fitted on {result.frames} frames: {fit['frames']} of the {fit['split']} of "
        f"{fit['data']} and {result.frames - fit['frames']} corrupted copies (severities "
        f"{','.join(map(str, severities))})"
    )
    if result.previous is not None:
        print(
            f"  replacing temperatures {result.previous.activity_temperature:.4g} (activity), "
            f"{result.previous.segmentation_temperature:.4g} (segmentation)"
        )
    print(
        f"  temperature {calibration.activity_temperature:.4f} (activity), "
        f"{calibration.segmentation_temperature:.4f} (segmentation)"
    )
    for name, (before, after) in ece_summary(result.metrics).items():
        print(f"  {name:38s} {before:.4f} before scaling, {after:.4f} after")
    print(f"calibrated checkpoint: {out}")
    return 0
