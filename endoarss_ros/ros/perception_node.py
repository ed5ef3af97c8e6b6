"""The perception node: camera frames in, surgical activity and segmentation masks out.

A managed (lifecycle) node, as ROS 2 perception nodes that hold a GPU model are:

- ``configure``: validate the parameters, load the checkpoint onto the device and warm it up,
  create the publishers, publish the label map, start the inference thread;
- ``activate``: subscribe to the camera; ``deactivate``: unsubscribe (the model stays loaded,
  so re-activation is instant);
- ``cleanup``: stop the thread and free the model and its device memory; a new
  ``checkpoint``, ``device`` or ``precision`` set while unconfigured is read by the next
  ``configure``, without restarting the process;
- ``shutdown`` from any state.

With ``autostart`` (the default) the node configures and activates itself at start-up, so
``ros2 run`` and the launch files need no lifecycle manager. The ``~/enable`` service is kept
for scripts written for earlier releases: it activates or deactivates.

Subscription callbacks only file the message (and pair stereo eyes) into a latest-frame slot;
one inference thread decodes and runs the frame pipeline (:mod:`endoarss_ros.inference.pipeline`,
the same one `endoarss bag infer` runs) and publishes, so a callback never waits for the model
and the model always works on the newest frame. Every output carries the header of the frame
it was computed from.

Topics (relative, so a namespace and remappings place them):

=====================  ===========================================  ==========================
mono                   stereo / side_by_side                        type
=====================  ===========================================  ==========================
image[/compressed]     left/image, right/image  |  stereo/image     Image / CompressedImage
activity               activity (one per pair, left header)         SurgicalActivity
trust                  trust (one per pair, left header)            FrameTrust
labels                 labels                                       LabelMap (latched)
segmentation/mask      left/segmentation/mask, right/...            Image mono8, 255 unlabeled
segmentation/overlay   left/segmentation/overlay, right/...         Image bgr8, only if wanted
/diagnostics           /diagnostics                                 DiagnosticArray
=====================  ===========================================  ==========================

``/diagnostics`` carries two statuses: ``<node>: perception`` (running, rates, drops) and
``<node>: trust`` (the trust level latched by hysteresis; STALE when no frame was judged in the
period).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import qos_policy_name_from_kind
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.time import Time
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool, Trigger

from endoarss_ros.image_conversion import ImageConversionError, compressed_to_numpy, image_to_rgb8
from endoarss_ros.inference.errors import FrameError, OutOfMemory, PredictorError
from endoarss_ros.inference.frame_slot import LatestSlot
from endoarss_ros.inference.statistics import PerceptionStatistics
from endoarss_ros.inference.stereo import LEFT, RIGHT
from endoarss_ros.msg import FrameTrust, LabelMap, SurgicalActivity
from endoarss_ros.trust.assessment import trust_signals

from . import qos
from .diagnostics import DiagnosticsReporter, NodeContext, TrustDiagnostics
from .messages import (
    activity_message,
    label_map_message,
    mask_message,
    overlay_message,
    trust_message,
)
from .parameters import (
    CONFIGURE,
    NODE_NAME,
    PARAMETER_NAMES,
    SPECS,
    ParameterError,
    PerceptionParameters,
    declare_parameters,
    load_parameter_file,
    parse_parameters,
    widen_integers,
)
from .rclpy_compat import (
    QoSRequestedIncompatibleQoSInfo,
    RCLError,
    SubscriptionEventCallbacks,
    add_parameter_callbacks,
    add_pre_set_parameters_callback,
    release_lifecycle_state_machine,
)
from .throttled_log import BackoffLog, ThrottledLog
from .transport import configure_large_image_transport, profile_variables, rmw_fastrtps_major

if TYPE_CHECKING:
    from endoarss_ros.inference.pipeline import FramePipeline, FrameResult
    from endoarss_ros.inference.predictor import Predictor

ImageMessage: TypeAlias = Image | CompressedImage

LOG_THROTTLE_S = 5.0
WATCHDOG_PERIOD_S = 1.0
SPIN_PERIOD_S = 0.2
"""How often the main loop looks at the stop flag that SIGINT/SIGTERM raise."""

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


@dataclass(frozen=True)
class FrameJob:
    """What the inference thread takes: one message (mono, side by side) or a stereo pair."""

    messages: tuple[ImageMessage, ...]
    received: float
    """time.monotonic() when the job became complete (the last message arrived)."""

    @property
    def stamp_ns(self) -> int:
        """The frame's stamp (a stereo pair's: the left eye's)."""
        return Time.from_msg(self.messages[0].header.stamp).nanoseconds


@dataclass
class _Outputs:
    """The publishers a configured node owns."""

    activity: Publisher
    trust: Publisher
    labels: Publisher
    masks: list[Publisher]
    overlays: list[Publisher]

    def all(self) -> list[Publisher]:
        return [self.activity, self.trust, self.labels, *self.masks, *self.overlays]


class PerceptionNode(LifecycleNode):
    """EndoARSS activity recognition and segmentation for a mono or stereo endoscope.

    ``predictor`` replaces loading one from the ``checkpoint`` parameter at configure (tests,
    or a process that shares one Predictor; it is then never closed by cleanup); node keyword
    arguments go to rclpy's Node. After construction, :attr:`failure` holds the reason when
    ``autostart`` could not configure the node.
    """

    def __init__(self, *, predictor: Predictor | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._given_predictor = predictor
        self._log = ThrottledLog(self.get_logger(), LOG_THROTTLE_S)
        self._silence_log = BackoffLog(self.get_logger())
        self.statistics = PerceptionStatistics()
        self.failure: Exception | None = None
        self._slot: LatestSlot[FrameJob] = LatestSlot()
        self._publish_lock = threading.Lock()
        self._active = False
        self._pipeline: FramePipeline[ImageMessage] | None = None
        self._outputs: _Outputs | None = None
        self._reporter: DiagnosticsReporter | None = None
        self._trust_diagnostics: TrustDiagnostics | None = None
        self._watchdogs: list[Timer] = []
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._subscriptions_by_topic: dict[str, Subscription] = {}
        self._input_topics: list[str] = []
        self._input_qos = qos.input_qos("sensor_data", 1)
        self._frame_sizes: dict[str, tuple[int, int]] = {}
        self._input_warning = ""
        self._qos_warnings: dict[str, str] = {}
        self._last_arrival: dict[str, float] = {}
        self._last_frame_wall: dict[str, float] = {}
        # Timers of the node's own upkeep run on the steady clock: with use_sim_time and a
        # stopped /clock (a paused bag), diagnostics must go on saying so.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._params = parse_parameters(declare_parameters(self), require_checkpoint=False)

        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            self._params.node.diagnostics_period_s, self._publish_diagnostics, clock=self._steady
        )
        self.create_service(Trigger, "~/reset_smoothing", self._on_reset_smoothing)
        self.create_service(SetBool, "~/enable", self._on_enable)
        add_pre_set_parameters_callback(self, widen_integers)
        add_parameter_callbacks(self, self._validate_parameter_change, self._apply_parameter_change)

        if not self._params.node.autostart:
            self.get_logger().info(
                "waiting unconfigured (autostart is false): "
                f"ros2 lifecycle set {self.get_fully_qualified_name()} configure"
            )
        elif self.trigger_configure() == SUCCESS:
            self.trigger_activate()
        # else: the configure failure is logged, and the process exits with its status

    @property
    def predictor(self) -> Predictor | None:
        """The loaded Predictor while configured."""
        return self._pipeline.predictor if self._pipeline is not None else None

    @property
    def configured(self) -> bool:
        return self._pipeline is not None

    @property
    def active(self) -> bool:
        return self._active

    # -- lifecycle ----------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from endoarss_ros.inference.pipeline import load_predictor

        self.failure = None
        try:
            params = parse_parameters(
                self._parameter_values(), require_checkpoint=self._given_predictor is None
            )
            predictor = self._given_predictor or load_predictor(params.predictor, params.pipeline)
            self._start(params, predictor)
        except (ParameterError, PredictorError) as exc:
            self.failure = exc
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return FAILURE
        except Exception as exc:  # rclpy would turn it into a silent ErrorProcessing
            self.failure = exc
            self.get_logger().error(f"configure failed unexpectedly: {exc!r}")
            self._release()
            return FAILURE
        self.get_logger().info(
            f"configured: {predictor.describe()}; warm-up {predictor.warmup_seconds:.2f} s"
        )
        return SUCCESS

    def _start(self, params: PerceptionParameters, predictor: Predictor) -> None:
        """Everything a configured node owns: pipeline, publishers, timers, inference thread."""
        from endoarss_ros.inference.pipeline import FramePipeline

        self._params = params
        self._pipeline = FramePipeline(predictor, params.pipeline)
        self._create_outputs(params)
        self._input_qos = qos.input_qos(params.node.input_qos, params.node.input_depth)
        self._input_topics = self._input_topic_names(params)
        self._reporter = DiagnosticsReporter(
            NodeContext(
                name=f"{self.get_fully_qualified_name()}: perception",
                hardware_id=predictor.hardware_id,
                device=str(predictor.device),
                precision=predictor.precision,
                model=predictor.info.name,
                model_hash=predictor.info.checkpoint_hash,
                input_mode=params.pipeline.input_mode,
                input_topics=tuple(self.resolve_topic_name(t) for t in self._input_topics),
            ),
            self.statistics.snapshot(),
        )
        signals = trust_signals(predictor.info.feature_statistics, predictor.info.calibrated)
        self._trust_diagnostics = TrustDiagnostics(
            f"{self.get_fully_qualified_name()}: trust", predictor.hardware_id, signals
        )
        if not (predictor.info.feature_statistics and predictor.info.calibrated):
            self.get_logger().warning(f"trust from {signals}")
        self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(
            params.node.diagnostics_period_s, self._publish_diagnostics, clock=self._steady
        )
        self._watchdogs = [
            self.create_timer(WATCHDOG_PERIOD_S, self._watch_input, clock=self._steady)
        ]
        self._stop.clear()
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._run_inference, name="inference", daemon=True)
        self._worker.start()

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.failure = None
        try:
            self._subscribe()
        except (InvalidQosOverridesError, RuntimeError, ValueError) as exc:
            # rclpy reports a bad qos_overrides.* value as any of these.
            self._pause()
            self.failure = ParameterError("qos_overrides", f"cannot be applied: {exc}")
            self.get_logger().error(f"activate failed: {self.failure}")
            return FAILURE
        if self._pipeline is not None:
            self._pipeline.reset_trust()  # frames resume: what was latched before is history
        with self._publish_lock:
            self._active = True
        params = self._params
        self.get_logger().info(
            f"ready: active, {params.pipeline.input_mode} {params.node.input_transport} input on "
            f"{', '.join(self.resolve_topic_name(t) for t in self._input_topics)} "
            f"({qos.describe(self._input_qos)})"
        )
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pause()
        self.get_logger().info("inactive: unsubscribed, model kept")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: model and device memory freed")
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pause()
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pause()
        self._release()
        return SUCCESS

    def _pause(self) -> None:
        """Stop taking frames; after this returns nothing more is published."""
        with self._publish_lock:
            self._active = False
        for subscription in self._subscriptions_by_topic.values():
            self.destroy_subscription(subscription)
        self._subscriptions_by_topic.clear()
        self._slot.clear()
        if self._pipeline is not None and self._pipeline.config.input_mode == "stereo":
            self._pipeline.clear_pairing()
        self._qos_warnings.clear()
        self._input_warning = ""

    def _release(self) -> None:
        """Stop the inference thread, then drop publishers, timers and the model."""
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        for timer in self._watchdogs:
            self.destroy_timer(timer)
        self._watchdogs = []
        if self._outputs is not None:
            for publisher in self._outputs.all():
                self.destroy_publisher(publisher)
            self._outputs = None
        pipeline, self._pipeline = self._pipeline, None
        self._reporter = None
        self._trust_diagnostics = None
        if pipeline is not None:
            pipeline.close()
        if pipeline is not None and self._given_predictor is None:
            pipeline.predictor.close()

    def destroy_node(self) -> None:
        """Stop the inference thread before the node (and its context) go away, so it never
        publishes through a destroyed publisher."""
        self._pause()
        self._release()
        super().destroy_node()
        release_lifecycle_state_machine(self)

    # -- parameters ---------------------------------------------------------------------

    def _parameter_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in PARAMETER_NAMES}

    def _validate_parameter_change(self, changes: list[Parameter]) -> SetParametersResult:
        ours = [p for p in changes if p.name in PARAMETER_NAMES]
        if self.configured:
            held = sorted(p.name for p in ours if SPECS[p.name].applies == CONFIGURE)
            if held:
                return SetParametersResult(
                    successful=False,
                    reason=(
                        f"{', '.join(held)} take(s) effect at configure: deactivate and clean "
                        f"up the node first (ros2 lifecycle set "
                        f"{self.get_fully_qualified_name()} cleanup), then set and configure"
                    ),
                )
        values = self._params.as_dict()
        values.update({p.name: p.value for p in ours})
        try:
            parse_parameters(values, require_checkpoint=False)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, changes: list[Parameter]) -> None:
        ours = [p for p in changes if p.name in PARAMETER_NAMES]
        if not ours:
            return
        values = self._params.as_dict()
        values.update({p.name: p.value for p in ours})
        self._params = parse_parameters(values, require_checkpoint=False)
        if self._pipeline is not None:
            self._pipeline.configure(self._params.pipeline)
        self.get_logger().info(f"parameters changed: {', '.join(sorted(p.name for p in ours))}")

    # -- services -----------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """Compatibility with earlier releases: enable = activate, disable = deactivate."""
        if bool(request.data) == self._active:
            response.success = True
        elif request.data:
            response.success = self.configured and self.trigger_activate() == SUCCESS
        else:
            response.success = self.trigger_deactivate() == SUCCESS
        state = "active" if self._active else "inactive" if self.configured else "unconfigured"
        response.message = state if response.success else f"cannot change state: {state}"
        return response

    def _on_reset_smoothing(
        self, request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        if self._pipeline is not None:
            self._pipeline.reset_smoothing()
        response.success = True
        response.message = "activity smoothing reset"
        return response

    # -- outputs ------------------------------------------------------------------------

    def _create_outputs(self, params: PerceptionParameters) -> None:
        assert self._pipeline is not None
        out_qos = qos.output_qos()
        streams = params.pipeline.streams
        self._outputs = _Outputs(
            activity=self.create_publisher(
                SurgicalActivity, "activity", qos.output_qos(qos.ACTIVITY_DEPTH)
            ),
            trust=self.create_publisher(FrameTrust, "trust", qos.output_qos(qos.ACTIVITY_DEPTH)),
            labels=self.create_publisher(LabelMap, "labels", qos.latched_qos()),
            masks=[
                self.create_publisher(Image, f"{prefix}segmentation/mask", out_qos)
                for prefix in streams
            ],
            overlays=[
                self.create_publisher(Image, f"{prefix}segmentation/overlay", out_qos)
                for prefix in streams
            ],
        )
        self._outputs.labels.publish(
            label_map_message(self._pipeline.predictor.info, self.get_clock().now().to_msg())
        )

    # -- input --------------------------------------------------------------------------

    @staticmethod
    def _input_topic_names(params: PerceptionParameters) -> list[str]:
        base = {
            "mono": ["image"],
            "stereo": ["left/image", "right/image"],
            "side_by_side": ["stereo/image"],
        }[params.pipeline.input_mode]
        suffix = "/compressed" if params.node.input_transport == "compressed" else ""
        return [name + suffix for name in base]

    def _subscribe(self) -> None:
        message_type = (
            CompressedImage if self._params.node.input_transport == "compressed" else Image
        )
        stereo = self._params.pipeline.input_mode == "stereo"
        sides: Sequence[str] = (LEFT, RIGHT) if stereo else ("",)
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

    def _on_frame(self, topic: str, side: str, msg: ImageMessage) -> None:
        now = time.monotonic()
        self._last_arrival[topic] = now
        self._last_frame_wall[topic] = time.time()
        if self._qos_warnings:
            self._qos_warnings.pop(topic, None)
        self.statistics.frame_received()
        pipeline = self._pipeline
        if pipeline is None:
            return
        if not side:
            self._offer(FrameJob((msg,), now))
            return
        pair = pipeline.pair(side, Time.from_msg(msg.header.stamp).nanoseconds, msg)
        self.statistics.set_unpaired(pipeline.unpaired)
        if pair is not None:
            self._offer(FrameJob((pair.left, pair.right), now))

    def _offer(self, job: FrameJob) -> None:
        replaced = self._slot.swap(job)
        if replaced is not None:
            self.statistics.drop("stale", len(replaced.messages), stamp_ns=replaced.stamp_ns)

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
        if not self._active:
            return
        timeout = self._params.node.input_timeout_s
        now = time.monotonic()
        warnings = list(self._qos_warnings.values())
        for topic, subscription in self._subscriptions_by_topic.items():
            if topic in self._qos_warnings or now - self._last_arrival.get(topic, now) < timeout:
                continue
            name = self.resolve_topic_name(topic)
            publishers = self.get_publishers_info_by_topic(name)
            incompatible = qos.incompatible_publishers(self, name, subscription.qos_profile)
            last_frame = self._last_frame_wall.get(topic)
            if not publishers:
                warnings.append(
                    f"no publisher on {name} yet"
                    if last_frame is None
                    else f"no frames on {name} since {_wall_time(last_frame)}: its publisher left"
                )
            elif incompatible:
                warnings.append(f"no frames on {name}: " + "; ".join(incompatible))
            elif last_frame is not None:
                warnings.append(
                    f"no frames on {name} since {_wall_time(last_frame)} "
                    f"({time.time() - last_frame:.0f} s ago) from the matched publisher(s) "
                    f"({len(publishers)}): the camera stopped publishing or stalled"
                )
            else:
                warnings.append(
                    f"no frame arrived on {name} for {timeout:g} s although "
                    f"{len(publishers)} publisher(s) match its QoS; if the images are larger "
                    f"than ~0.5 MB and sent best effort over Fast DDS, start the publishing "
                    f"process with {' or '.join(profile_variables(rmw_fastrtps_major()))} set "
                    "to this package's config/fastdds_large_images.xml; if they are larger than "
                    "that profile's 32 MiB shared-memory segment (above 4096x2730 rgb8), no "
                    "profile carries them best effort: set input_qos to reliable, or send "
                    "smaller frames (docs/transport.md)"
                )
        self._input_warning = "; ".join(warnings)
        if warnings:
            self._silence_log.warning(self._input_warning)
        else:
            self._silence_log.clear()

    # -- inference ----------------------------------------------------------------------

    def _run_inference(self) -> None:
        while not self._stop.is_set():
            job = self._slot.take(timeout=0.2)
            if job is None:
                continue
            try:
                self._process(job)
            except Exception as exc:  # the thread must survive anything one frame does
                if not self.context.ok():
                    return  # the process is stopping
                self.statistics.drop("inference_error", error=repr(exc))
                with contextlib.suppress(Exception):
                    self._log("error", "unexpected", f"frame dropped: {exc!r}")

    def _process(self, job: FrameJob) -> None:
        pipeline, outputs = self._pipeline, self._outputs
        if not self._active or pipeline is None or outputs is None:
            return
        headers = [msg.header for msg in job.messages]
        max_age_ms = self._params.node.max_frame_age_ms
        if max_age_ms > 0:
            age_ms = (self.get_clock().now() - Time.from_msg(headers[0].stamp)).nanoseconds / 1e6
            if age_ms > max_age_ms:
                reason = f"frame {age_ms:.0f} ms old (max_frame_age_ms {max_age_ms:g})"
                self.statistics.drop("too_old", len(job.messages), reason, job.stamp_ns)
                self._log("warning", "too_old", f"dropped a {reason}")
                return
        try:
            max_pixels = pipeline.config.max_frame_pixels
            images = [_decode(msg, max_pixels) for msg in job.messages]
            self._note_frame_sizes(images, pipeline.config.input_mode)
            result = pipeline.run(images)
        except (ImageConversionError, FrameError) as exc:
            self.statistics.drop("bad_input", len(job.messages), str(exc), job.stamp_ns)
            self._log("warning", "bad_input", f"dropped an input frame: {exc}")
            return
        except OutOfMemory as exc:
            self.statistics.drop("out_of_memory", 1, str(exc), job.stamp_ns)
            self._log("error", "oom", f"dropped a frame: {exc}")
            return
        except Exception as exc:
            self.statistics.drop("inference_error", 1, repr(exc), job.stamp_ns)
            self._log("error", "inference", f"inference failed on a frame, dropped it: {exc!r}")
            return
        with self._publish_lock:
            if not self._active:
                return
            self._publish(result, headers, outputs, pipeline)
        self.statistics.frame_published(time.monotonic() - job.received, result.inference_s)

    def _publish(
        self,
        result: FrameResult,
        headers: Sequence[Header],
        outputs: _Outputs,
        pipeline: FramePipeline[ImageMessage],
    ) -> None:
        names = pipeline.predictor.info.activity_names
        outputs.activity.publish(activity_message(headers[0], result.activity, names))
        outputs.trust.publish(trust_message(headers[0], result))
        if self._trust_diagnostics is not None:
            self._trust_diagnostics.frame(result)
        for stream, (mask, source) in enumerate(zip(result.masks, result.sources, strict=True)):
            header = headers[source]
            outputs.masks[stream].publish(mask_message(mask, header))
            overlay_pub = outputs.overlays[stream]
            if overlay_pub.get_subscription_count() > 0:
                overlay_pub.publish(overlay_message(pipeline.overlay(result, stream), header))
                self.statistics.overlay_rendered()

    def _note_frame_sizes(self, images: Sequence[np.ndarray], input_mode: str) -> None:
        """A camera that changes resolution mid-stream is worth a line in the log; the frame
        itself is served at its new size."""
        names = ("left ", "right ") if input_mode == "stereo" else ("",)
        for name, image in zip(names, images, strict=True):
            size = (image.shape[0], image.shape[1])
            previous = self._frame_sizes.get(name)
            self._frame_sizes[name] = size
            if previous is not None and previous != size:
                self.statistics.size_changed()
                self._log(
                    "info",
                    f"size:{name}:{previous}:{size}",
                    f"{name or 'input '}frame size changed from {previous[1]}x{previous[0]} "
                    f"to {size[1]}x{size[0]}",
                )

    # -- diagnostics --------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if self._reporter is not None:
            status = self._reporter.status(
                self.statistics.snapshot(), self._active, self._input_warning
            )
        else:
            level, message = DiagnosticStatus.WARN, "unconfigured"
            if self.failure is not None:
                level, message = DiagnosticStatus.ERROR, f"configure failed: {self.failure}"
            status = DiagnosticStatus(
                level=level, name=f"{self.get_fully_qualified_name()}: perception", message=message
            )
        array = DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()))
        array.status = [status]
        trust = self._trust_diagnostics
        if trust is not None:
            array.status.append(trust.status(self._active))
        self._diagnostics_pub.publish(array)


def _init_failure(args: Sequence[str] | None, exc: Exception) -> str:
    """One line for a command line rcl refused: a parameter file it cannot read is named
    with the reason, as the launch files would report it."""
    argv = list(sys.argv if args is None else args)
    for flag, value in itertools.pairwise(argv):
        if flag == "--params-file":
            try:
                load_parameter_file(value)
            except ParameterError as error:
                return str(error)
        if flag in ("-p", "--param") and value.endswith(":=") and value.count(":=") == 1:
            name = value.removesuffix(":=")
            if name == "checkpoint":
                return str(
                    ParameterError(
                        name, "is required: the path of an EndoARSS .safetensors checkpoint"
                    )
                )
            return str(ParameterError(name, f"has no value: write -p {name}:=VALUE"))
    return f"invalid ROS arguments: {str(exc).splitlines()[0]}"


def _wall_time(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def _decode(msg: ImageMessage, max_pixels: int) -> np.ndarray:
    if isinstance(msg, CompressedImage):
        return compressed_to_numpy(msg, "rgb8", max_pixels)
    return image_to_rgb8(msg, max_pixels)


def main(args: Sequence[str] | None = None) -> int:
    """Exit status: 0 after SIGINT/SIGTERM, 2 for a bad parameter, 1 when the checkpoint or
    device cannot be used (autostart)."""
    transport = configure_large_image_transport()
    # The node stops on its own signal handlers: the inference thread must end before the
    # context goes, or it could publish through a finished context.
    try:
        rclpy.init(
            args=None if args is None else list(args),
            signal_handler_options=SignalHandlerOptions.NO,
        )
    except RCLError as exc:
        print(f"[FATAL] [{NODE_NAME}]: {_init_failure(args, exc)}", file=sys.stderr)
        return 2
    logger = rclpy.logging.get_logger(NODE_NAME)
    logger.info(transport)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node: PerceptionNode | None = None
    status = 0
    try:
        node = PerceptionNode()
        if isinstance(node.failure, ParameterError):
            status = 2
        elif node.failure is not None:
            status = 1
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except ParameterError as exc:
        logger.fatal(f"invalid configuration: {exc}")
        status = 2
    finally:
        if node is not None:
            with contextlib.suppress(Exception):
                node.trigger_shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def run() -> None:
    """The executable's entry point: :func:`main`, then leave without the interpreter's
    teardown. Everything the node owns is released by then; tearing down PyTorch and the DDS
    participant again at exit took 2-6 s on a loaded 2-core machine, past the 5 s after which
    `ros2 launch` escalates Ctrl-C to SIGTERM (0.2 s with this)."""
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
