"""`endoarss synth OUT_DIR`: write a synthetic surgical-scene dataset in the generic layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from endoarss_ros.cli_options import frame_size


def _count(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="new or empty folder")
    parser.add_argument("--frames", type=_count, default=1000, help="independent frames (1000)")
    parser.add_argument(
        "--size",
        dest="sizes",
        type=frame_size(32),
        action="append",
        help="WIDTHxHEIGHT (256x256); repeat for several: frame i and clip i take the "
        "(i mod n)-th of the n sizes",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (0)")
    parser.add_argument("--clips", type=_count, default=0, help="clips with activity segments (0)")
    parser.add_argument("--clip-length", type=_count, default=300, help="frames per clip (300)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share for val (0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share for test (0.1)")
    parser.add_argument(
        "--image-format",
        choices=("png", "jpg"),
        default="png",
        help="png (lossless, default) or jpg (quality 95: smaller and faster); masks are PNG",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (all CPU cores)")
    parser.add_argument(
        "--no-instruments",
        dest="instruments",
        action="store_false",
        help="withdraw every instrument out of view: the same scenes, all labelled idle",
    )


def run(args: argparse.Namespace) -> int:
    from endoarss_ros.data.synthetic.writer import write_synthetic_dataset

    sizes = args.sizes or [(256, 256)]
    total = args.frames + args.clips * args.clip_length
    try:
        with tqdm(total=total, unit="frame", file=sys.stderr, disable=None) as bar:
            summary = write_synthetic_dataset(
                args.out_dir,
                frames=args.frames,
                sizes=sizes,
                seed=args.seed,
                clips=args.clips,
                clip_length=args.clip_length,
                val_fraction=args.val_fraction,
                test_fraction=args.test_fraction,
                image_format=args.image_format,
                workers=args.workers,
                on_progress=bar.update,
                instruments=args.instruments,
            )
    except ValueError as exc:  # a bad combination of option values; files: OSError, status 1
        print(f"endoarss synth: {exc}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{width}x{height}" for height, width in sizes)
    splits = ", ".join(f"{name} {count}" for name, count in summary.per_split.items())
    activities = ", ".join(f"{name} {count}" for name, count in summary.per_activity.items())
    print(
        f"wrote {summary.frames} frames of {shown} to {summary.root} in "
        f"{summary.seconds:.1f} s ({summary.frames_per_second:.0f} frames/s)\n"
        f"splits: {splits}\nactivities: {activities}"
    )
    return 0
