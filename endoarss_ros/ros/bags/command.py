"""The `endoarss bag` subcommand: make | play | record | reindex | eval | infer.

`make`, `infer` and `eval` need no rclpy; `play` and `record` import it when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from endoarss_ros.bags.formats import DEFAULT_ROS_DISTRO, ROS_DISTROS
from endoarss_ros.bags.sources import DEFAULT_ARTEFACT_SEVERITY
from endoarss_ros.cli_options import (
    OptionError,
    add_section_options,
    frame_size,
    section_from_options,
)
from endoarss_ros.inference.options import PipelineConfig, PredictorOptions

_INFER_ALIASES = {
    "smoothing.method": ("--smoothing",),
    "smoothing.ema_alpha": ("--ema-alpha",),
    "smoothing.hysteresis_frames": ("--hysteresis-frames",),
    "smoothing.hysteresis_margin": ("--hysteresis-margin",),
}
"""Spellings of `bag infer` options from before they were generated from the node's."""

if TYPE_CHECKING:
    from endoarss_ros.bags.infer import InferOptions


def _number(kind: type, low: float, *, low_open: bool = False, high: float | None = None):
    """An argparse type: a `kind` number >= `low` (> with `low_open`), <= `high`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        below = value <= low if low_open else value < low
        if below or (high is not None and value > high) or value != value:
            bounds = f"{'>' if low_open else '>='} {low:g}" + (
                f" and <= {high:g}" if high is not None else ""
            )
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


_POSITIVE = _number(float, 0, low_open=True)
_NON_NEGATIVE = _number(float, 0)
_COUNT = _number(int, 0)


def _storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        choices=("mcap", "sqlite3"),
        default="mcap",
        help="rosbag2 storage plugin of the written bag (default: mcap)",
    )


def _ros_distro(parser: argparse.ArgumentParser) -> None:
    versions = ", ".join(f"{name}: {version}" for name, version in ROS_DISTROS.items())
    parser.add_argument(
        "--ros-distro",
        choices=tuple(ROS_DISTROS),
        default=DEFAULT_ROS_DISTRO,
        help="ROS 2 distribution whose `ros2 bag` must open the written bag: it is written in "
        f"the rosbag2 metadata version that distribution writes ({versions}). Humble's "
        "version opens in Humble, Jazzy and Kilted; it has no custom_data field, so custom "
        "data goes to a sidecar file in the bag folder (default: "
        f"{DEFAULT_ROS_DISTRO})",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="bag_command", metavar="ACTION", required=True)

    make = commands.add_parser("make", help="write a camera bag with camera_info and ground truth")
    make.add_argument("output", type=Path, help="bag folder to create")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--synthetic",
        type=int,
        metavar="FRAMES",
        help="render a synthetic clip of FRAMES frames (with ground truth)",
    )
    source.add_argument("--video", type=Path, help="frames of a video file")
    source.add_argument("--images", type=Path, help="image files of a folder, in name order")
    make.add_argument(
        "--size",
        type=frame_size(16),
        default=(240, 320),
        metavar="WxH",
        help="synthetic frame size (default 320x240)",
    )
    make.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic clip seed; with the frame index, the seed of --artefact corruptions",
    )
    make.add_argument(
        "--fps", type=_POSITIVE, default=None, help="frame rate (default: the video's, else 30)"
    )
    make.add_argument(
        "--limit", type=_number(int, 1), default=None, help="at most this many frames"
    )
    make.add_argument("--camera-ns", default="/camera", help="camera namespace (default /camera)")
    make.add_argument(
        "--compressed",
        action="store_true",
        help="JPEG CompressedImage on <camera>/image_raw/compressed",
    )
    make.add_argument("--jpeg-quality", type=_number(int, 0, high=100), default=90)
    make.add_argument(
        "--stereo",
        action="store_true",
        help="left/ and right/ cameras: halves of side-by-side source frames "
        "with --side-by-side, else the frame and a shifted copy",
    )
    make.add_argument("--side-by-side", action="store_true")
    make.add_argument("--disparity", type=_COUNT, default=8, help="right-eye shift in pixels")
    make.add_argument(
        "--best-effort",
        action="store_true",
        help="offer best-effort camera QoS (default: reliable, like gscam)",
    )
    make.add_argument(
        "--start-time",
        type=float,
        default=1_700_000_000.0,
        help="stamp of the first frame, seconds since the epoch",
    )
    make.add_argument("--frame-id", default="endoscope")
    make.add_argument(
        "--artefact",
        action="append",
        default=[],
        metavar="NAME:FIRST:LAST[:SEVERITY]",
        help="corrupt frames FIRST..LAST (inclusive, from 0) with the corruption NAME of "
        "endoarss_ros.data.corruptions (smoke, gaussian_blur, over_exposure, bleeding, ...) at "
        f"SEVERITY 1..5 (default {DEFAULT_ARTEFACT_SEVERITY}), seeded by --seed and the frame "
        "index; ground truth unchanged; listed in the bag's custom_data "
        "(endoarss.artefacts). Repeatable; segments must not overlap",
    )
    _storage(make)
    _ros_distro(make)

    play = commands.add_parser("play", help="publish a bag with its original timing")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=_POSITIVE, default=1.0, help="speed factor (default 1)")
    play.add_argument("--loop", action="store_true")
    play.add_argument(
        "--start-offset",
        type=_NON_NEGATIVE,
        default=0.0,
        metavar="S",
        help="skip the first S seconds of the bag",
    )
    play.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    play.add_argument("--topics", nargs="+", default=[], help="play only these topics")
    play.add_argument(
        "--clock",
        type=_NON_NEGATIVE,
        default=0.0,
        metavar="HZ",
        help="publish bag time on /clock at HZ (and before every message)",
    )
    play.add_argument(
        "--wait-for",
        action="append",
        default=[],
        metavar="TOPIC",
        help="start once TOPIC (after remapping) has a subscriber",
    )
    play.add_argument("--wait-timeout", type=_NON_NEGATIVE, default=30.0)
    play.add_argument(
        "--delay", type=_NON_NEGATIVE, default=0.0, help="seconds to wait before playing"
    )

    record = commands.add_parser("record", help="record the perception node's outputs")
    record.add_argument("output", type=Path, help="bag folder to create")
    record.add_argument(
        "--namespace",
        default="/endoarss",
        help="the node's namespace (records activity, segmentation/mask, labels)",
    )
    record.add_argument(
        "--topics",
        nargs="+",
        default=[],
        help="record these topics instead (types looked up in the graph)",
    )
    record.add_argument(
        "--use-sim-time",
        action="store_true",
        help="log times from /clock (as published by bag play --clock)",
    )
    record.add_argument(
        "--count", type=_COUNT, default=0, help="stop after this many messages on the first topic"
    )
    record.add_argument("--duration", type=_NON_NEGATIVE, default=0.0, help="stop after S seconds")
    record.add_argument(
        "--idle-timeout",
        type=_NON_NEGATIVE,
        default=0.0,
        help="stop S seconds after the last message",
    )
    _storage(record)
    _ros_distro(record)

    reindex = commands.add_parser(
        "reindex",
        help="rebuild a bag's metadata.yaml and mcap summary from its storage file",
        description="Repair a bag whose writer died: rebuild metadata.yaml from the storage "
        "file, and for mcap the summary and footer (every complete record is kept, a record "
        "cut short is left out); an sqlite3 database gets its unfinished transaction rolled "
        "back.",
    )
    reindex.add_argument("bag", type=Path, help="bag folder")

    evaluate = commands.add_parser("eval", help="score an output bag against the ground truth")
    evaluate.add_argument("input_bag", type=Path, help="bag with frames and ground truth")
    evaluate.add_argument("output_bag", type=Path, help="recorded or inferred outputs")
    evaluate.add_argument("--report", type=Path, required=True, help="report folder")
    evaluate.add_argument("--camera-topic")
    evaluate.add_argument("--activity-topic")
    evaluate.add_argument("--mask-topic")
    evaluate.add_argument(
        "--trust-topic",
        help="FrameTrust topic to score (default: the output bag's one trust topic; none: the "
        "report says so)",
    )

    infer = commands.add_parser(
        "infer",
        help="run the node's frame pipeline over a bag, write an output bag",
        description="Run the perception node's frame pipeline over a bag's frames and write "
        "its outputs as the node publishes them. The model and pipeline options are the "
        "node's parameters, with the same names (dots and underscores become dashes), "
        "defaults and rules.",
    )
    infer.add_argument("input_bag", type=Path)
    infer.add_argument("output_bag", type=Path)
    topics = infer.add_mutually_exclusive_group()
    topics.add_argument(
        "--camera-topic",
        help="mono: the camera topic; with --input-mode side_by_side the topic of left|right "
        "frames (default: the bag's one camera topic)",
    )
    topics.add_argument(
        "--stereo-topics",
        nargs=2,
        metavar=("LEFT", "RIGHT"),
        help="two camera topics paired by stamp, as the node's stereo mode (implies "
        "--input-mode stereo; default in that mode: the bag's left/right pair)",
    )
    topics.add_argument(
        "--side-by-side-topic",
        metavar="TOPIC",
        help="one topic of left|right frames, as the node's side_by_side mode (implies "
        "--input-mode side_by_side)",
    )
    infer.add_argument("--namespace", default="/endoarss", help="namespace of the output topics")
    node = infer.add_argument_group("model and pipeline (the node's parameters)")
    add_section_options(node, PredictorOptions, required=("checkpoint",))
    add_section_options(node, PipelineConfig, aliases=_INFER_ALIASES)
    _storage(infer)
    _ros_distro(infer)


def run(args: argparse.Namespace) -> int:
    """Errors propagate: `endoarss_ros.cli` reports them in one line (BagError: status 1,
    OptionError: 2)."""
    return _ACTIONS[args.bag_command](args)


def _make(args: argparse.Namespace) -> int:
    from endoarss_ros.bags.make import MakeOptions, make_bag
    from endoarss_ros.bags.sources import (
        ArtefactError,
        ArtefactSegment,
        folder_source,
        synthetic_source,
        video_source,
    )

    try:
        artefacts = tuple(ArtefactSegment.parse(text) for text in args.artefact)
    except ArtefactError as exc:
        raise OptionError("--artefact", str(exc)) from exc
    if args.synthetic is not None:
        if args.synthetic < 1:
            raise OptionError("--synthetic", f"needs at least one frame, got {args.synthetic}")
        source = synthetic_source(args.synthetic, args.size, args.seed, args.fps or 30.0)
    elif args.video is not None:
        source = video_source(args.video, args.fps, args.limit)
    else:
        source = folder_source(args.images, args.fps or 30.0, args.limit)
    options = MakeOptions(
        camera_ns=args.camera_ns,
        stereo=args.stereo,
        side_by_side_source=args.side_by_side,
        disparity=args.disparity,
        compressed=args.compressed,
        jpeg_quality=args.jpeg_quality,
        reliable=not args.best_effort,
        start_time_s=args.start_time,
        frame_id=args.frame_id,
        storage=args.storage,
        ros_distro=args.ros_distro,
        artefacts=artefacts,
        artefact_seed=args.seed,
    )
    try:
        made = make_bag(args.output, source, options)
    except ArtefactError as exc:
        raise OptionError("--artefact", str(exc)) from exc
    summary = {"bag": str(made.path), "frames": made.frames, "topics": made.topics}
    if made.artefacts:
        summary["artefacts"] = made.artefacts
    print(json.dumps(summary))
    return 0


def _play(args: argparse.Namespace) -> int:
    from .play import PlayOptions, parse_remap, play_bag

    result = play_bag(
        args.bag,
        PlayOptions(
            rate=args.rate,
            loop=args.loop,
            start_offset_s=args.start_offset,
            remap=parse_remap(args.remap),
            topics=args.topics,
            clock_hz=args.clock,
            wait_for=args.wait_for,
            wait_timeout_s=args.wait_timeout,
            delay_s=args.delay,
        ),
    )
    print(
        f"played {result.messages} messages ({result.bytes / 1e6:.1f} MB) in "
        f"{result.seconds:.2f} s: {result.messages / max(result.seconds, 1e-9):.1f} msg/s, "
        f"{result.bytes / 1e6 / max(result.seconds, 1e-9):.1f} MB/s, "
        f"lateness p95 {result.lateness_p95_ms:.1f} ms",
        flush=True,
    )
    return 0


def _record(args: argparse.Namespace) -> int:
    from .record import RecordOptions, record_bag

    counts = record_bag(
        args.output,
        RecordOptions(
            namespace=args.namespace,
            topics=args.topics,
            use_sim_time=args.use_sim_time,
            count=args.count,
            duration_s=args.duration,
            idle_timeout_s=args.idle_timeout,
            storage=args.storage,
            ros_distro=args.ros_distro,
        ),
    )
    print(json.dumps({"bag": str(args.output), "messages": counts}), flush=True)
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from endoarss_ros.bags.durable import reindex

    result = reindex(args.bag)
    total = sum(result.messages.values())
    dropped = (
        f"; left out {result.dropped_bytes} bytes of an incomplete record at the end"
        if result.dropped_bytes
        else ""
    )
    print(
        f"reindexed {args.bag} ({result.storage}): {total} messages on "
        f"{len(result.messages)} topics{dropped}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from endoarss_ros.bags.evaluate import EvalOptions, evaluate_bags
    from endoarss_ros.bags.report import write_report
    from endoarss_ros.metrics import json_ready

    evaluation = evaluate_bags(
        args.input_bag,
        args.output_bag,
        EvalOptions(args.camera_topic, args.activity_topic, args.mask_topic, args.trust_topic),
    )
    written = write_report(evaluation, args.report)
    metrics = evaluation.metrics
    headline = {
        "frames": metrics["frames"],
        "frames_missing": metrics["frames_missing"],
        "accuracy": metrics["activity"]["accuracy"],
        "miou": (metrics["segmentation"] or {}).get("miou"),
        "latency_p50_ms": metrics["latency"].get("p50_ms"),
        "trust": _trust_headline(metrics["trust"]),
        "report": [str(path) for path in written],
    }
    print(json.dumps(json_ready(headline)))
    return 0


def _trust_headline(trust: dict | None) -> dict | str:
    """The trust scores worth a glance: levels, unflagged against all accuracy, and per
    artefact segment the detection delay and recovery."""
    if trust is None:
        return "no trust output"
    headline = {
        "latched_levels": trust["latched_levels"],
        "accuracy_not_flagged": trust["by_level"]["OK"]["activity_accuracy"],
        "accuracy_all": trust["by_level"]["all"]["activity_accuracy"],
        "clean_flag_rate": trust["clean"]["flag_rate"],
        "clean_latched_error_rate": trust["clean"]["latched_error_rate"],
    }
    if trust["segments"] is not None:
        headline["segments"] = [
            {
                "corruption": s["corruption"],
                "frames": [s["first_frame"], s["last_frame"]],
                "detection_delay_frames": s["detection_delay_frames"],
                "recovery_frames": s["recovery_frames"],
            }
            for s in trust["segments"]
        ]
    return headline


SKIPPED_FRAMES_STATUS = 3
"""`bag infer` answered every frame it could, but skipped some that could not be decoded."""


def _infer(args: argparse.Namespace) -> int:
    from endoarss_ros.bags.infer import SKIPPED_KEY, infer_bag

    options = _infer_options(args)

    def report(skipped) -> None:
        print(f"endoarss bag infer: {skipped.describe()}", file=sys.stderr, flush=True)

    result = infer_bag(args.input_bag, args.output_bag, options, on_skip=report)
    if result.skipped:
        unpaired = f", {result.unpaired} eyes left without a partner" if result.unpaired else ""
        print(
            f"endoarss bag infer: answered {result.outputs} of {result.frames} frames"
            f"{' (stereo pairs)' if options.pipeline.input_mode == 'stereo' else ''}, "
            f"skipped {len(result.skipped)} bad frames{unpaired} (listed in "
            f"{result.skipped_listed_in}, custom_data {SKIPPED_KEY})",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {"bag": str(args.output_bag), "frames": result.outputs, "skipped": len(result.skipped)}
        )
    )
    return SKIPPED_FRAMES_STATUS if result.skipped else 0


def _infer_options(args: argparse.Namespace) -> InferOptions:
    from endoarss_ros.bags.infer import InferOptions

    predictor = section_from_options(args, PredictorOptions)
    # A topic option names the input mode unless --input-mode says it already.
    implied = (
        "stereo" if args.stereo_topics else "side_by_side" if args.side_by_side_topic else None
    )
    given = args.input_mode is not None
    pipeline = section_from_options(
        args, PipelineConfig, {"input_mode": implied} if implied and not given else None
    )
    mode = pipeline.input_mode
    if implied and mode != implied:
        option = "--stereo-topics" if args.stereo_topics else "--side-by-side-topic"
        raise OptionError(option, f"needs --input-mode {implied}, got --input-mode {mode}")
    if args.camera_topic and mode == "stereo":
        raise OptionError(
            "--camera-topic", "names one topic; stereo input takes --stereo-topics LEFT RIGHT"
        )
    return InferOptions(
        predictor=predictor,
        pipeline=pipeline,
        camera_topic=args.camera_topic or args.side_by_side_topic,
        stereo_topics=tuple(args.stereo_topics) if args.stereo_topics else None,
        output_ns=args.namespace,
        storage=args.storage,
        ros_distro=args.ros_distro,
    )


_ACTIONS = {
    "make": _make,
    "play": _play,
    "record": _record,
    "reindex": _reindex,
    "eval": _eval,
    "infer": _infer,
}
