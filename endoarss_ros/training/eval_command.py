"""``endoarss eval CHECKPOINT --out DIR``: metrics and a report folder for a saved model.

The data to evaluate on is, by default, the test split of the dataset the checkpoint was
trained on (its training summary records the ``data`` section); ``--config`` takes the
``data`` section of a training YAML instead, and ``--set data.FIELD=VALUE`` edits single values.
``--data DIR`` is short for ``--set data.root=DIR`` (a dataset folder; synthetic in-memory data
becomes the generic layout). ``--robustness`` adds the corruption sweep (every corruption of the
suite at severities 1-5). The report includes calibration: ECE before and after the
checkpoint's temperature scaling (``endoarss calibrate``) and a reliability diagram.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from endoarss_ros.cli_options import OptionError


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--data`` and ``--set``: which data a checkpoint command reads (by
    default the data section the checkpoint was trained with)."""
    parser.add_argument("--config", type=Path, help="training YAML whose data section to use")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="dataset folder: short for --set data.root=DIR (generic layout unless the data "
        "section names official)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="data.FIELD=VALUE",
        help="override a data field, e.g. --set data.root=/data/MTLESD (repeatable)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="model checkpoint (.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="report folder to write")
    parser.add_argument("--split", default=None, help="split to evaluate (data.test_split)")
    add_data_options(parser)
    parser.add_argument("--robustness", action="store_true", help="run the corruption sweep")
    parser.add_argument(
        "--corruptions",
        default=None,
        help="comma-separated corruption names for --robustness (default: all)",
    )
    parser.add_argument(
        "--severities", default="1,2,3,4,5", help="comma-separated severities (1,2,3,4,5)"
    )
    parser.add_argument("--examples", type=int, default=4, help="best/worst frames shown (4)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _data_section(args: argparse.Namespace) -> Any:
    return data_and_seed(args)[0]


def data_and_seed(args: argparse.Namespace) -> tuple[Any, int]:
    """The ``DataSection`` of ``--config`` or of the checkpoint's training record, edited by
    ``--data`` and ``--set``, and the training seed (it chose a carved validation split)."""
    from endoarss_ros.model.checkpoint import read_metadata
    from endoarss_ros.training.config import (
        DataSection,
        TrainConfigError,
        load_train_config,
        parse_override,
        set_dotted,
    )

    seed = 0
    if args.config is not None:
        config = load_train_config(args.config)
        data, seed = config.data.to_dict(), config.seed
    else:
        _, meta = read_metadata(args.checkpoint)
        recorded_config = meta.training.get("config", {}) if meta.training else {}
        recorded = recorded_config.get("data") if isinstance(recorded_config, dict) else None
        if not isinstance(recorded, dict):
            raise TrainConfigError(
                f"{args.checkpoint} does not record its training data; pass --config"
            )
        data = dict(recorded)
        recorded_seed = recorded_config.get("seed", 0)
        seed = recorded_seed if isinstance(recorded_seed, int) else 0
    if getattr(args, "data", None) is not None:
        data["root"] = str(args.data)
        if data.get("source", "synthetic") == "synthetic":
            data["source"] = "generic"
    wrapper: dict[str, Any] = {"data": data}
    for item in args.overrides:
        key, value = parse_override(item)
        if not key.startswith("data."):
            raise TrainConfigError(f"--set {item}: only data.* fields can be set here")
        set_dotted(wrapper, key, value)
    return DataSection.from_dict(wrapper["data"]), seed


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OptionError(name, f"must be comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from endoarss_ros.data.corruptions import CORRUPTIONS
    from endoarss_ros.metrics import headline
    from endoarss_ros.training.calibration import ece_summary
    from endoarss_ros.training.distributed import resolve_device
    from endoarss_ros.training.evaluation import evaluate_checkpoint
    from endoarss_ros.training.reports import write_report

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Bad input (a bad option or configuration value: status 2; a checkpoint or dataset that
    # cannot be used: 1) is reported in one line by endoarss_ros.cli.
    data = _data_section(args)
    corruptions: list[str] = []
    if args.robustness:
        corruptions = (
            list(CORRUPTIONS)
            if args.corruptions is None
            else [c.strip() for c in args.corruptions.split(",") if c.strip()]
        )
        unknown = [c for c in corruptions if c not in CORRUPTIONS]
        if unknown:
            raise OptionError(
                "--corruptions", f"names unknown {unknown}; known: {', '.join(CORRUPTIONS)}"
            )
    severities = _int_list(args.severities, "--severities")
    if any(s not in (1, 2, 3, 4, 5) for s in severities):
        raise OptionError("--severities", f"must lie in 1..5, got {severities}")
    result = evaluate_checkpoint(
        args.checkpoint,
        data,
        args.split or data.test_split,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        num_workers=args.workers,
        examples=args.examples,
        corruptions=corruptions,
        severities=severities,
        progress=not args.quiet,
    )
    written = write_report(
        args.out,
        result.metrics,
        result.class_info,
        result.context,
        result.best,
        result.worst,
        result.robustness,
        result.calibration,
    )
    chance = 1.0 / result.class_info.num_activities
    print(f"evaluated {result.context['frames']} frames ({result.context['split']})")
    for name, value in headline(result.metrics).items():
        print(f"  {name:34s} {value:.4f}")
    if "activity" in result.metrics:
        print(f"  {'activity chance (uniform)':34s} {chance:.4f}")
    if result.calibration is not None:
        print(f"calibration: {result.context['calibration']}")
        for name, (before, after) in ece_summary(result.calibration).items():
            print(f"  {name:38s} {before:.4f} before scaling, {after:.4f} after")
    print(f"report: {args.out} ({len(written)} files)")
    return 0
