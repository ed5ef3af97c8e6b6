"""The perception node: camera frames in, surgical activity and segmentation masks out.

Subscription callbacks only file the message (and pair stereo eyes) into a latest-frame slot;
one inference thread decodes, predicts and publishes, so a callback never waits for the model
and the model always works on the newest frame. Every output carries the header of the frame
it was computed from.

Topics (relative, so a namespace and remappings place them):

=====================  ===========================================  ==========================
mono                   stereo / side_by_side                        type
=====================  ===========================================  ==========================
image[/compressed]     left/image, right/image  |  stereo/image     Image / CompressedImage
activity               activity (one per pair, left header)         SurgicalActivity
labels                 labels                                       LabelMap (latched)
segmentation/mask      left/segmentation/mask, right/...            Image mono8, 255 unlabeled
segmentation/overlay   left/segmentation/overlay, right/...         Image bgr8, only if wanted
/diagnostics           /diagnostics                                 DiagnosticArray
=====================  ===========================================  ==========================
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import qos_policy_name_from_kind
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.subscription import Subscription
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool, Trigger

from endoarss_ros.image_conversion import ImageConversionError, compressed_to_numpy, image_to_rgb8
from endoarss_ros.inference.errors import PredictorError
from endoarss_ros.inference.frame_slot import LatestSlot
from endoarss_ros.inference.overlay import palette, render_overlay
from endoarss_ros.inference.smoothing import ActivitySmoother
from endoarss_ros.inference.statistics import PerceptionStatistics
from endoarss_ros.inference.stereo import LEFT, RIGHT, StereoPairer
from endoarss_ros.msg import LabelMap, SurgicalActivity

from . import qos
from .diagnostics import DiagnosticsReporter, NodeContext
from .messages import activity_message, label_map_message, mask_message, overlay_message
from .parameters import (
    NODE_NAME,
    PARAMETER_NAMES,
    PARAMETERS,
    ParameterError,
    as_dict,
    parse_parameters,
)
from .transport import PROFILE_VARIABLE, configure_large_image_transport

if TYPE_CHECKING:
    from endoarss_ros.inference import Predictor

ImageMessage = Image | CompressedImage

LOG_THROTTLE_S = 5.0
WATCHDOG_PERIOD_S = 1.0


@dataclass(frozen=True)
class FrameJob:
    """What the inference thread takes: one message (mono, side by side) or a stereo pair."""

    messages: tuple[ImageMessage, ...]
    received: float
    """time.monotonic() when the job became complete (the last message arrived)."""


class ThrottledLog:
    """At most one message per key and period, with a count of what was held back; one
    bad frame per second must not flood the log, but every kind of problem must appear."""

    def __init__(self, logger: Any, period_s: float) -> None:
        self._logger = logger
        self._period = period_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: str, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -math.inf) < self._period:
                self._held[key] = self._held.get(key, 0) + 1
                return
            held = self._held.pop(key, 0)
            self._last[key] = now
        if held:
            message += f" ({held} more like this in the last {self._period:g} s)"
        # rclpy fixes a call site's severity at its first call: one call site per level.
        if level == "error":
            self._logger.error(message)
        elif level == "warning":
            self._logger.warning(message)
        else:
            self._logger.info(message)


class PerceptionNode(Node):
    """EndoARSS activity recognition and segmentation for a mono or stereo endoscope.

    ``predictor`` replaces loading one from the ``checkpoint`` parameter (tests, or a process
    that shares one Predictor); node keyword arguments go to rclpy's Node.
    """

    def __init__(self, *, predictor: Predictor | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._declare_parameters()
        self._params = parse_parameters(
            self._parameter_values(), require_checkpoint=predictor is None
        )
        params = self._params
        if predictor is None:
            # Imported only now: PyTorch takes seconds to load, and a configuration error
            # should be reported without that wait.
            from endoarss_ros.inference.predictor import Predictor

            predictor = Predictor(
                params.checkpoint,
                device=params.device,
                precision=params.precision,
                compile=params.compile,
                threads=params.cpu_threads,
                mask_min_confidence=params.mask_min_confidence,
                warmup_batch_sizes=(2,) if params.stereo else (1,),
            )
        self.predictor = predictor
        info = self.predictor.info
        self._palette = palette(info.segmentation_colors)
        self._log = ThrottledLog(self.get_logger(), LOG_THROTTLE_S)
        self.statistics = PerceptionStatistics()
        self._smoother = ActivitySmoother(params.smoothing)
        self._slot: LatestSlot[FrameJob] = LatestSlot()
        self._pairer: StereoPairer[ImageMessage] | None = (
            StereoPairer(round(params.stereo_slop_ms * 1e6))
            if params.input_mode == "stereo"
            else None
        )
        self._streams = ("",) if not params.stereo else ("left/", "right/")
        self._frame_sizes: dict[str, tuple[int, int]] = {}
        self._input_warning = ""
        self._qos_warnings: dict[str, str] = {}
        self._last_arrival: dict[str, float] = {}
        self._enabled = False
        self._subscriptions_by_topic: dict[str, Subscription] = {}

        out_qos = qos.output_qos()
        self._activity_pub = self.create_publisher(
            SurgicalActivity, "activity", qos.output_qos(qos.ACTIVITY_DEPTH)
        )
        self._labels_pub = self.create_publisher(LabelMap, "labels", qos.latched_qos())
        self._mask_pubs: list[Publisher] = [
            self.create_publisher(Image, f"{prefix}segmentation/mask", out_qos)
            for prefix in self._streams
        ]
        self._overlay_pubs: list[Publisher] = [
            self.create_publisher(Image, f"{prefix}segmentation/overlay", out_qos)
            for prefix in self._streams
        ]
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._labels_pub.publish(label_map_message(info, self.get_clock().now().to_msg()))

        self.create_service(SetBool, "enable", self._on_enable)
        self.create_service(Trigger, "reset_smoothing", self._on_reset_smoothing)
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

        self._input_qos = qos.input_qos(params.input_qos, params.input_depth)
        self._input_topics = self._input_topic_names()
        self._reporter = DiagnosticsReporter(
            NodeContext(
                name=f"{self.get_fully_qualified_name()}: perception",
                hardware_id=_hardware_id(self.predictor),
                device=str(self.predictor.device),
                precision=self.predictor.precision,
                model=info.name,
                model_hash=info.checkpoint_hash,
                input_mode=params.input_mode,
                input_topics=tuple(self.resolve_topic_name(t) for t in self._input_topics),
            ),
            self.statistics.snapshot(),
        )
        self.create_timer(params.diagnostics_period_s, self._publish_diagnostics)
        self.create_timer(WATCHDOG_PERIOD_S, self._watch_input)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run_inference, name="inference", daemon=True)
        self._worker.start()
        self._set_enabled(params.enable)
        self.get_logger().info(
            f"ready: {self.predictor.describe()}; {params.input_mode} "
            f"{params.input_transport} input on "
            f"{', '.join(self.resolve_topic_name(t) for t in self._input_topics)} "
            f"({qos.describe(self._input_qos)}); warm-up {self.predictor.warmup_seconds:.2f} s"
        )

    # -- parameters ---------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        for spec in PARAMETERS:
            self.declare_parameter(
                spec.name,
                spec.default,
                ParameterDescriptor(
                    description=spec.description,
                    read_only=not spec.runtime,
                    dynamic_typing=True,
                ),
            )

    def _parameter_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in PARAMETER_NAMES}

    def _validate_parameter_change(self, changes: list[Parameter]) -> SetParametersResult:
        values = as_dict(self._params)
        values.update({p.name: p.value for p in changes if p.name in PARAMETER_NAMES})
        try:
            parse_parameters(values, require_checkpoint=False)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, changes: list[Parameter]) -> None:
        if not any(p.name in PARAMETER_NAMES for p in changes):
            return
        previous = self._params
        values = as_dict(previous)
        values.update({p.name: p.value for p in changes if p.name in PARAMETER_NAMES})
        self._params = parse_parameters(values, require_checkpoint=False)
        if self._params.smoothing != previous.smoothing:
            self._smoother.configure(self._params.smoothing)
        if self._params.enable != self._enabled:
            self._set_enabled(self._params.enable)
        changed = sorted(p.name for p in changes if p.name in PARAMETER_NAMES)
        self.get_logger().info(f"parameters changed: {', '.join(changed)}")

    # -- services -----------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter("enable", value=bool(request.data))])[0]
        response.success = result.successful
        response.message = (
            ("enabled" if request.data else "disabled") if result.successful else result.reason
        )
        return response

    def _on_reset_smoothing(
        self, request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        self._smoother.reset()
        response.success = True
        response.message = "activity smoothing reset"
        return response

    # -- input --------------------------------------------------------------------------

    def _input_topic_names(self) -> list[str]:
        base = {
            "mono": ["image"],
            "stereo": ["left/image", "right/image"],
            "side_by_side": ["stereo/image"],
        }[self._params.input_mode]
        suffix = "/compressed" if self._params.input_transport == "compressed" else ""
        return [name + suffix for name in base]

    def _set_enabled(self, enabled: bool) -> None:
        """Disabling unsubscribes, so a paused node costs the camera and DDS nothing."""
        self._enabled = enabled
        if enabled and not self._subscriptions_by_topic:
            message_type = (
                CompressedImage if self._params.input_transport == "compressed" else Image
            )
            sides: Sequence[str] = (LEFT, RIGHT) if self._pairer is not None else ("",)
            now = time.monotonic()
            for topic, side in zip(self._input_topics, sides, strict=True):
                self._subscriptions_by_topic[topic] = self.create_subscription(
                    message_type,
                    topic,
                    partial(self._on_frame, topic, side),
                    self._input_qos,
                    event_callbacks=SubscriptionEventCallbacks(
                        incompatible_qos=partial(self._on_incompatible_qos, topic)
                    ),
                    qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                )
                self._last_arrival[topic] = now
        elif not enabled:
            for subscription in self._subscriptions_by_topic.values():
                self.destroy_subscription(subscription)
            self._subscriptions_by_topic.clear()
            self._slot.clear()
            if self._pairer is not None:
                self._pairer.clear()
            self._qos_warnings.clear()
            self._input_warning = ""

    def _on_frame(self, topic: str, side: str, msg: ImageMessage) -> None:
        now = time.monotonic()
        self._last_arrival[topic] = now
        if self._qos_warnings:
            self._qos_warnings.pop(topic, None)
        self.statistics.frame_received()
        if self._pairer is None:
            self._offer(FrameJob((msg,), now))
            return
        pair = self._pairer.add(side, Time.from_msg(msg.header.stamp).nanoseconds, msg)
        self.statistics.set_unpaired(self._pairer.unpaired)
        if pair is not None:
            self._offer(FrameJob((pair.left, pair.right), now))

    def _offer(self, job: FrameJob) -> None:
        if self._slot.put(job):
            self.statistics.drop("stale", len(job.messages))

    def _on_incompatible_qos(self, topic: str, event: QoSRequestedIncompatibleQoSInfo) -> None:
        self.statistics.qos_incompatible()
        subscription = self._subscriptions_by_topic.get(topic)
        profile = subscription.qos_profile if subscription is not None else self._input_qos
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        hint = qos.qos_mismatch_hint(self.resolve_topic_name(topic), profile, policy)
        # Kept until a frame arrives on the topic; the watchdog reports it with the rest.
        self._qos_warnings[topic] = hint
        self._input_warning = "; ".join(self._qos_warnings.values())
        self._log("warning", f"qos:{topic}", hint)

    def _watch_input(self) -> None:
        """Explain silence on an input topic: no publisher, an incompatible one, or a
        compatible one whose frames do not make it through the transport."""
        if not self._enabled:
            return
        timeout = self._params.input_timeout_s
        now = time.monotonic()
        warnings = list(self._qos_warnings.values())
        for topic, subscription in self._subscriptions_by_topic.items():
            if topic in self._qos_warnings or now - self._last_arrival.get(topic, now) < timeout:
                continue
            name = self.resolve_topic_name(topic)
            publishers = self.get_publishers_info_by_topic(name)
            incompatible = qos.incompatible_publishers(self, name, subscription.qos_profile)
            if not publishers:
                warnings.append(f"no publisher on {name} yet")
            elif incompatible:
                warnings.append(f"no frames on {name}: " + "; ".join(incompatible))
            else:
                warnings.append(
                    f"no frame arrived on {name} for {timeout:g} s although "
                    f"{len(publishers)} publisher(s) match its QoS; if the images are larger "
                    f"than ~0.5 MB and sent best effort over Fast DDS, start the publishing "
                    f"process with {PROFILE_VARIABLE} set to this package's "
                    f"config/fastdds_large_images.xml (README, 'Transport')"
                )
        self._input_warning = "; ".join(warnings)
        if warnings:
            self._log("warning", "input-silence", self._input_warning)

    # -- inference ----------------------------------------------------------------------

    def _run_inference(self) -> None:
        while not self._stop.is_set():
            job = self._slot.take(timeout=0.2)
            if job is None:
                continue
            try:
                self._process(job)
            except Exception as exc:  # the thread must survive anything one frame does
                self.statistics.drop("inference_error", error=repr(exc))
                with contextlib.suppress(Exception):
                    self._log("error", "unexpected", f"frame dropped: {exc!r}")

    def _process(self, job: FrameJob) -> None:
        if not self._enabled:
            return
        headers = [msg.header for msg in job.messages]
        max_age_ms = self._params.max_frame_age_ms
        if max_age_ms > 0:
            age_ms = (self.get_clock().now() - Time.from_msg(headers[0].stamp)).nanoseconds / 1e6
            if age_ms > max_age_ms:
                self.statistics.drop("too_old", len(job.messages))
                self._log(
                    "warning",
                    "too_old",
                    f"dropped a frame {age_ms:.0f} ms old (max_frame_age_ms {max_age_ms:g})",
                )
                return
        try:
            frames = self._decode(job.messages)
        except ImageConversionError as exc:
            self.statistics.drop("bad_input", len(job.messages), error=str(exc))
            self._log("warning", "bad_input", f"dropped an input frame: {exc}")
            return
        if self._params.input_mode == "side_by_side":
            headers = headers * 2
        self._note_frame_sizes(frames)

        started = time.perf_counter()
        try:
            predictions = self.predictor.predict(frames)
        except Exception as exc:
            self._inference_failed(exc)
            return
        inference_s = time.perf_counter() - started

        probabilities = np.mean([p.activity for p in predictions], axis=0)
        activity = self._smoother.update(probabilities)
        names = self.predictor.info.activity_names
        self._activity_pub.publish(activity_message(headers[0], activity, names))
        for stream, (prediction, header, frame) in enumerate(
            zip(predictions, headers, frames, strict=True)
        ):
            self._mask_pubs[stream].publish(mask_message(prediction.mask, header))
            overlay_pub = self._overlay_pubs[stream]
            if overlay_pub.get_subscription_count() > 0:
                overlay = render_overlay(
                    frame, prediction.mask, self._palette, self._params.overlay_alpha
                )
                overlay_pub.publish(overlay_message(overlay, header))
                self.statistics.overlay_rendered()
        self.statistics.frame_published(time.monotonic() - job.received, inference_s)

    def _decode(self, messages: Sequence[ImageMessage]) -> list[np.ndarray]:
        frames = [
            compressed_to_numpy(msg, "rgb8")
            if isinstance(msg, CompressedImage)
            else image_to_rgb8(msg)
            for msg in messages
        ]
        if self._params.input_mode != "side_by_side":
            return frames
        (frame,) = frames
        width = frame.shape[1]
        if width % 2:
            raise ImageConversionError(
                f"side-by-side stereo frame has an odd width {width}; "
                "it cannot be split into two eyes"
            )
        return [frame[:, : width // 2], frame[:, width // 2 :]]

    def _note_frame_sizes(self, frames: Sequence[np.ndarray]) -> None:
        """A camera that changes resolution mid-stream is worth a line in the log; the frame
        itself is served at its new size."""
        for stream, frame in zip(self._streams, frames, strict=True):
            size = frame.shape[:2]
            previous = self._frame_sizes.get(stream)
            self._frame_sizes[stream] = size
            if previous is not None and previous != size:
                self.statistics.size_changed()
                self._log(
                    "info",
                    f"size:{stream}:{previous}:{size}",
                    f"{stream or 'input '}frame size changed from {previous[1]}x{previous[0]} "
                    f"to {size[1]}x{size[0]}",
                )

    def _inference_failed(self, exc: Exception) -> None:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            self.statistics.drop("out_of_memory", error=str(exc).splitlines()[0])
            self.predictor.release_cached_memory()
            self._log("error", "oom", f"out of device memory on a frame, dropped it: {exc}")
        else:
            self.statistics.drop("inference_error", error=repr(exc))
            self._log("error", "inference", f"inference failed on a frame, dropped it: {exc!r}")

    # -- diagnostics --------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        status = self._reporter.status(
            self.statistics.snapshot(), self._enabled, self._input_warning
        )
        array = DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()))
        array.status = [status]
        self._diagnostics_pub.publish(array)

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the inference thread (it finishes the frame it is on)."""
        self._stop.set()
        self._slot.close()
        self._worker.join(timeout=30.0)


def _hardware_id(predictor: Predictor) -> str:
    device = predictor.device
    if device.type == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def main(args: Sequence[str] | None = None) -> int:
    transport = configure_large_image_transport()
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger(NODE_NAME)
    logger.info(transport)
    node: PerceptionNode | None = None
    status = 0
    try:
        node = PerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ParameterError as exc:
        logger.fatal(f"invalid configuration: {exc}")
        status = 2
    except PredictorError as exc:
        logger.fatal(f"cannot start: {exc}")
        status = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
