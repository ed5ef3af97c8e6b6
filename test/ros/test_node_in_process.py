"""The perception node in this process, sharing one Predictor: the cases that need control
over the Predictor (a device out of memory) or the node (side-by-side stereo, QoS mismatch,
frame age, silent inputs) without paying for a process per case."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from perception_harness import Inbox, mask_pixels, scene_frames
from ros_harness import wait_until

from endoarss_ros.ros.transport import profile_variables, rmw_fastrtps_major

pytestmark = pytest.mark.ros
# The name the transport hint gives: the one this Fast DDS reads its profile from.
PROFILE_VARIABLE = profile_variables(rmw_fastrtps_major())[0]


@contextmanager
def perception_node(predictor, namespace: str, **parameters) -> Iterator[SimpleNamespace]:
    """A PerceptionNode and a peer node in one context, spun in the background."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from endoarss_ros.ros.perception_node import PerceptionNode

    settings = {"smoothing.method": "none", "diagnostics_period_s": 0.2, **parameters}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PerceptionNode(
        predictor=predictor,
        context=context,
        namespace=namespace,
        parameter_overrides=[Parameter(k, value=v) for k, v in settings.items()],
    )
    peer = rclpy.create_node("peer", context=context, namespace=namespace)
    diagnostics = Inbox()
    peer.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, 10)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield SimpleNamespace(node=node, peer=peer, diagnostics=diagnostics)
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(5.0)


def subscribe(peer, topic: str) -> Inbox:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    inbox = Inbox()
    peer.create_subscription(
        Image, topic, inbox, QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    )
    return inbox


def camera(peer, topic: str, best_effort: bool = False):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
    return peer.create_publisher(Image, topic, QoSProfile(depth=1, reliability=reliability))


def frame_message(frame: np.ndarray, stamp=None):
    from endoarss_ros.image_conversion import numpy_to_image

    message = numpy_to_image(frame, "rgb8")
    if stamp is not None:
        message.header.stamp = stamp
    message.header.frame_id = "ecm"
    return message


def send_until_answered(publisher, message, inbox: Inbox, timeout: float = 15.0):
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not any(m.header.stamp == message.header.stamp for m in inbox.messages):
            assert not deadline.is_set(), "the frame was not answered"
            publisher.publish(message)
            deadline.wait(0.2)
    finally:
        timer.cancel()
    return inbox.with_stamp(message.header.stamp, 1.0, "the answer")


def newest_status(ctx, status: str = "perception"):
    """The newest /diagnostics status of this context's perception node (its ``perception`` or
    ``trust`` status), if one arrived."""
    name = f"{ctx.node.get_fully_qualified_name()}: {status}"
    for array in reversed(ctx.diagnostics.messages):
        for status in array.status:
            if status.name == name:
                return status
    return None


def latest_status(ctx):
    status = newest_status(ctx)
    assert status is not None, "no diagnostics from the perception node yet"
    return status


def status_message(ctx) -> str:
    """For waiting: empty until the node's first diagnostics arrive."""
    status = newest_status(ctx)
    return "" if status is None else status.message


def test_side_by_side_frame_is_split_into_two_eyes(offline_predictor):
    left, right = scene_frames(480, 640, 2, seed=21)
    with perception_node(offline_predictor, "/sbs", input_mode="side_by_side") as ctx:
        left_masks = subscribe(ctx.peer, "left/segmentation/mask")
        right_masks = subscribe(ctx.peer, "right/segmentation/mask")
        publisher = camera(ctx.peer, "stereo/image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")
        message = frame_message(np.hstack([left, right]), ctx.peer.get_clock().now().to_msg())
        left_mask = send_until_answered(publisher, message, left_masks)
        right_mask = right_masks.with_stamp(message.header.stamp, 5.0, "the right mask")
        expected = offline_predictor.predict([left, right])
        for mask, prediction in zip((left_mask, right_mask), expected, strict=True):
            assert mask.header.frame_id == "ecm"
            np.testing.assert_array_equal(mask_pixels(mask), prediction.mask)

        odd = frame_message(scene_frames(480, 641, 1)[0], ctx.peer.get_clock().now().to_msg())
        publisher.publish(odd)
        wait_until(lambda: ctx.node.statistics.drops["bad_input"] >= 1, 10, "bad_input")
        assert "odd width 641" in ctx.node.statistics.last_error
        again = frame_message(np.hstack([right, left]), ctx.peer.get_clock().now().to_msg())
        send_until_answered(publisher, again, left_masks)


def failing_once(checkpoint, error: Exception):
    """A Predictor whose network raises ``error`` on the first forward pass after warm-up, so
    the Predictor's own recovery (out of memory: release the cache, raise OutOfMemory) runs as
    on a device; ``predictor.released`` counts cache releases."""
    from endoarss_ros.inference import Predictor

    predictor = Predictor(checkpoint, device="cpu")
    forward, release = predictor._forward, predictor.release_cached_memory
    pending = [error]
    predictor.released = 0

    def failing_forward(batch):
        if pending:
            raise pending.pop()
        return forward(batch)

    def counting_release() -> None:
        predictor.released += 1
        release()

    predictor._forward = failing_forward
    predictor.release_cached_memory = counting_release
    return predictor


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "out_of_memory",
        ),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), "inference_error"),
    ],
    ids=["out-of-memory", "other-error"],
)
def test_a_failing_frame_is_counted_and_the_next_one_answered(tiny_checkpoint, error, cause):
    predictor = failing_once(tiny_checkpoint, error)
    with perception_node(predictor, f"/failing_{cause}") as ctx:
        masks = subscribe(ctx.peer, "segmentation/mask")
        publisher = camera(ctx.peer, "image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")
        first = frame_message(
            scene_frames(480, 640, 1, seed=1)[0], ctx.peer.get_clock().now().to_msg()
        )
        publisher.publish(first)
        wait_until(lambda: ctx.node.statistics.drops[cause] == 1, 10, f"{cause} to be counted")
        second = frame_message(
            scene_frames(480, 640, 1, seed=2)[0], ctx.peer.get_clock().now().to_msg()
        )
        send_until_answered(publisher, second, masks)
        assert predictor.released == (1 if cause == "out_of_memory" else 0)
        wait_until(
            lambda: any(
                kv.key == f"dropped.{cause}" and kv.value == "1"
                for kv in getattr(newest_status(ctx), "values", ())
            ),
            5,
            f"dropped.{cause} in /diagnostics",
        )


def test_incompatible_publisher_qos_is_explained(offline_predictor):
    from diagnostic_msgs.msg import DiagnosticStatus

    with perception_node(offline_predictor, "/strict", input_qos="reliable") as ctx:
        wait_until(lambda: ctx.diagnostics.messages, 5, "diagnostics")
        camera(ctx.peer, "image", best_effort=True)
        wait_until(lambda: ctx.node.statistics.qos_incompatible_events >= 1, 10, "the QoS event")
        wait_until(
            lambda: "incompatible" in status_message(ctx),
            5,
            "the mismatch in /diagnostics",
        )
        status = latest_status(ctx)
        assert status.level == DiagnosticStatus.WARN
        assert "/strict/image" in status.message
        assert "RELIABILITY" in status.message
        assert "set input_qos to sensor_data" in status.message


def test_silence_from_a_matching_publisher_points_at_the_transport(offline_predictor):
    with perception_node(offline_predictor, "/silent", input_timeout_s=0.5) as ctx:
        wait_until(lambda: ctx.diagnostics.messages, 5, "diagnostics")
        camera(ctx.peer, "image")
        wait_until(
            lambda: PROFILE_VARIABLE in status_message(ctx),
            10,
            "the transport hint in /diagnostics",
        )
        assert "1 publisher(s) match its QoS" in latest_status(ctx).message


def test_frames_older_than_the_maximum_age_are_dropped(offline_predictor):
    from rclpy.duration import Duration

    with perception_node(offline_predictor, "/aged", max_frame_age_ms=500.0) as ctx:
        masks = subscribe(ctx.peer, "segmentation/mask")
        publisher = camera(ctx.peer, "image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")
        frame = scene_frames(480, 640, 1)[0]
        old = (ctx.peer.get_clock().now() - Duration(seconds=10)).to_msg()
        publisher.publish(frame_message(frame, old))
        wait_until(lambda: ctx.node.statistics.drops["too_old"] >= 1, 10, "too_old")
        assert not masks.messages
        send_until_answered(
            publisher, frame_message(frame, ctx.peer.get_clock().now().to_msg()), masks
        )


def test_a_camera_that_stops_is_reported_as_stopped_not_as_transport(offline_predictor):
    with perception_node(offline_predictor, "/stopped", input_timeout_s=0.5) as ctx:
        masks = subscribe(ctx.peer, "segmentation/mask")
        publisher = camera(ctx.peer, "image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")
        frame = scene_frames(120, 160, 1)[0]
        send_until_answered(
            publisher, frame_message(frame, ctx.peer.get_clock().now().to_msg()), masks
        )
        wait_until(
            lambda: "camera stopped publishing" in status_message(ctx),
            10,
            "the stopped camera in /diagnostics",
        )
        message = latest_status(ctx).message
        assert "no frames on /stopped/image since" in message
        assert PROFILE_VARIABLE not in message


def test_diagnostics_go_on_when_sim_time_stops(offline_predictor):
    """use_sim_time with no /clock (a paused bag): the node must still report."""
    with perception_node(offline_predictor, "/simtime", use_sim_time=True) as ctx:
        wait_until(lambda: len(ctx.diagnostics.messages) >= 3, 10, "diagnostics without a clock")
        assert ctx.node.get_clock().now().nanoseconds == 0, "no /clock was published"


def test_each_drop_cause_keeps_its_reason_and_frame_stamp(offline_predictor):
    from rclpy.duration import Duration

    from endoarss_ros.image_conversion import numpy_to_image

    with perception_node(offline_predictor, "/reasons", max_frame_age_ms=500.0) as ctx:
        publisher = camera(ctx.peer, "image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")
        old = (ctx.peer.get_clock().now() - Duration(seconds=10)).to_msg()
        publisher.publish(frame_message(scene_frames(60, 80, 1)[0], old))
        wait_until(lambda: ctx.node.statistics.drops["too_old"] >= 1, 10, "too_old")
        bad = numpy_to_image(scene_frames(60, 80, 1)[0], "rgb8")
        bad.header.stamp = ctx.peer.get_clock().now().to_msg()
        bad.encoding = "rgb9"
        publisher.publish(bad)
        wait_until(lambda: ctx.node.statistics.drops["bad_input"] >= 1, 10, "bad_input")

        def reported() -> dict[str, str]:
            status = newest_status(ctx)
            return {kv.key: kv.value for kv in getattr(status, "values", ())}

        wait_until(lambda: "dropped.bad_input.last_reason" in reported(), 5, "the reasons")
        values = reported()
        assert "max_frame_age_ms" in values["dropped.too_old.last_reason"]
        assert values["dropped.too_old.last_stamp"] == f"{old.sec}.{old.nanosec:09d}"
        assert "rgb9" in values["dropped.bad_input.last_reason"]
        stamp = bad.header.stamp
        assert values["dropped.bad_input.last_stamp"] == f"{stamp.sec}.{stamp.nanosec:09d}"


def test_a_frame_larger_than_max_frame_pixels_is_dropped_unread_and_the_next_answered(
    offline_predictor,
):
    with perception_node(offline_predictor, "/huge", max_frame_pixels=120 * 160) as ctx:
        masks = subscribe(ctx.peer, "segmentation/mask")
        publisher = camera(ctx.peer, "image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")
        huge = frame_message(scene_frames(121, 160, 1)[0], ctx.peer.get_clock().now().to_msg())
        publisher.publish(huge)
        wait_until(lambda: ctx.node.statistics.drops["bad_input"] >= 1, 10, "the refusal")
        reason = ctx.node.statistics.snapshot().last_drops["bad_input"].reason
        assert reason == (
            "rgb8 image of 160x121 pixels (19,360) is larger than max_frame_pixels (19,200); "
            "refused unread"
        )
        assert not any(m.header.stamp == huge.header.stamp for m in masks.messages)
        fits = frame_message(scene_frames(120, 160, 1)[0], ctx.peer.get_clock().now().to_msg())
        assert send_until_answered(publisher, fits, masks).height == 120


def test_an_unexpected_configure_failure_is_reported_not_swallowed():
    """rclpy turns an exception in a transition callback into a silent error transition; the
    node must say what went wrong and stay unconfigured."""
    import rclpy
    from rclpy.parameter import Parameter

    from endoarss_ros.ros.perception_node import PerceptionNode

    class Broken:
        @property
        def info(self):
            raise RuntimeError("driver reset while loading")

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = PerceptionNode(
            predictor=Broken(),
            context=context,
            namespace="/broken",
            parameter_overrides=[Parameter("device", value="cpu")],
        )
        try:
            assert isinstance(node.failure, RuntimeError)
            assert "driver reset" in str(node.failure)
            assert not node.configured and not node.active
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_a_whole_number_for_a_double_parameter_is_taken_as_that_double(offline_predictor):
    from rclpy.parameter import Parameter

    from endoarss_ros.ros.rclpy_compat import add_pre_set_parameters_callback

    with perception_node(offline_predictor, "/widen") as ctx:
        if not add_pre_set_parameters_callback(ctx.peer, lambda parameters: parameters):
            pytest.skip("this rclpy has no pre-set parameter callbacks (Humble)")
        (result,) = ctx.node.set_parameters([Parameter("overlay_alpha", value=1)])
        assert result.successful, result.reason
        value = ctx.node.get_parameter("overlay_alpha")
        assert value.type_ == Parameter.Type.DOUBLE and value.value == 1.0
        (result,) = ctx.node.set_parameters([Parameter("overlay_alpha", value=2)])
        assert not result.successful and "out of range" in result.reason  # rclpy's range check
        (result,) = ctx.node.set_parameters([Parameter("overlay_alpha", value="half")])
        assert not result.successful and "Wrong parameter type" in result.reason
