"""The perception node in its own process, mono raw input: outputs, bad input, overlay,
services, parameters, diagnostics and shutdown, over real DDS.

One node process serves the module (starting one costs seconds). Each test asserts only on
what it caused (counts before and after, its own stamps) and leaves the node as it found it,
so the tests pass in any order and one alone; the shutdown test starts a node of its own.
"""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest
from perception_harness import (
    FIRST_STAMP,
    DiagnosticsWatcher,
    Inbox,
    assert_stops_cleanly,
    call_service,
    publish_until,
    scene_frames,
    start_frame_publisher,
    start_perception_node,
    write_frames,
)
from ros_harness import wait_until

pytestmark = pytest.mark.ros

NAMESPACE = "/mono"


@pytest.fixture(scope="module")
def node_process(tiny_checkpoint):
    process = start_perception_node(NAMESPACE, tiny_checkpoint)
    try:
        process.wait_for_output(r"\bready:", timeout=90)
        yield process
    finally:
        process.stop()
        process.kill()


@pytest.fixture(scope="module")
def io(ros_peer, node_process):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from endoarss_ros.msg import SurgicalActivity

    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    activity, masks = Inbox(), Inbox()
    ros_peer.create_subscription(SurgicalActivity, f"{NAMESPACE}/activity", activity, reliable)
    ros_peer.create_subscription(Image, f"{NAMESPACE}/segmentation/mask", masks, reliable)
    camera = ros_peer.create_publisher(
        Image, f"{NAMESPACE}/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    diagnostics = DiagnosticsWatcher(ros_peer, f"{NAMESPACE}/perception")
    wait_until(
        lambda: camera.get_subscription_count() >= 1 and diagnostics.latest,
        30,
        "discovery of the perception node",
    )
    return SimpleNamespace(activity=activity, masks=masks, camera=camera, diagnostics=diagnostics)


_next_stamp = [FIRST_STAMP + 10_000.0]


def good_frame(height: int = 480, width: int = 640, seed: int = 0):
    from endoarss_ros.image_conversion import numpy_to_image

    _next_stamp[0] += 1.0
    message = numpy_to_image(scene_frames(height, width, 1, seed)[0], "rgb8")
    message.header.stamp.sec = int(_next_stamp[0])
    message.header.frame_id = "ecm_left_frame"
    return message


def answered(io, message) -> bool:
    return any(m.header.stamp == message.header.stamp for m in io.masks.messages)


def send_and_wait_for_answer(io, message, timeout: float = 20.0):
    publish_until(io.camera, message, lambda: answered(io, message), timeout, "an answer")
    return io.masks.with_stamp(message.header.stamp, 1.0, "the mask")


def send_until_dropped(io, message, what: str) -> int:
    """Publishes `message` until the node counts a bad input; the count before it."""
    before = io.diagnostics.count("dropped.bad_input")
    publish_until(
        io.camera,
        message,
        lambda: io.diagnostics.count("dropped.bad_input") > before,
        20,
        f"{what} to be counted",
    )
    return before


def test_late_subscriber_receives_the_label_map(ros_peer, io, offline_predictor):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from endoarss_ros.msg import LabelMap

    latched = QoSProfile(
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    inbox = Inbox()
    ros_peer.create_subscription(LabelMap, f"{NAMESPACE}/labels", inbox, latched)
    label_map = inbox.wait_for(lambda m: True, 20.0, "the latched label map")
    info = offline_predictor.info
    assert list(label_map.activity_names) == list(info.activity_names)
    assert list(label_map.segmentation_names) == list(info.segmentation_names)
    assert list(label_map.segmentation_colors) == [
        c for rgb in info.segmentation_colors for c in rgb
    ]
    assert label_map.model_name == "vit_tiny_patch14"
    assert label_map.model_hash == info.checkpoint_hash
    assert (label_map.input_height, label_map.input_width) == info.input_size
    assert label_map.header.frame_id == ""


@pytest.mark.parametrize(("height", "width"), [(480, 640), (1024, 1280)])
def test_frames_from_a_camera_process_come_back_as_the_predictor_computes_them(
    io, offline_predictor, tmp_path, height, width
):
    rate, count, first = 30.0, 45, FIRST_STAMP + width
    frames = scene_frames(height, width, 3, seed=width)
    camera = start_frame_publisher(
        write_frames(tmp_path / "frames", frames),
        "--topic", f"{NAMESPACE}/image",
        "--rate", str(rate),
        "--count", str(count),
        "--first-stamp", str(first),
        "--frame-id", "ecm_left_frame",
        "--best-effort",
        "--wait-for-subscribers", "1",
    )  # fmt: skip
    try:
        wait_until(lambda: camera.returncode is not None, 60, "the camera process to finish")
        assert camera.returncode == 0, camera.output
        assert "published 45" in camera.output
    finally:
        camera.kill()
    published = {round((first + i / rate) * 1e9) for i in range(count)}

    def ours(message) -> bool:
        return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec in published

    wait_until(lambda: sum(map(ours, io.masks.messages)) >= 3, 20, "three answered frames")
    masks = [m for m in io.masks.messages if ours(m)]
    activities = {
        (m.header.stamp.sec, m.header.stamp.nanosec): m for m in io.activity.messages if ours(m)
    }
    expected = {}
    for mask in masks:
        assert mask.header.frame_id == "ecm_left_frame"
        assert (mask.height, mask.width, mask.encoding) == (height, width, "mono8")
        index = round(((mask.header.stamp.sec + mask.header.stamp.nanosec / 1e9) - first) * rate)
        if index % 3 not in expected:
            expected[index % 3] = offline_predictor.predict([frames[index % 3]])[0]
        offline = expected[index % 3]
        pixels = np.frombuffer(mask.data, np.uint8).reshape(height, mask.step)[:, :width]
        np.testing.assert_array_equal(pixels, offline.mask)
        activity = activities.get((mask.header.stamp.sec, mask.header.stamp.nanosec))
        if activity is not None:
            np.testing.assert_allclose(activity.probabilities, offline.activity, atol=1e-6)
            assert activity.class_id == activity.raw_class_id == int(np.argmax(offline.activity))
            assert activity.label == offline_predictor.info.activity_names[activity.class_id]
            assert activity.header.frame_id == "ecm_left_frame"
    assert activities, "no activity message for any of the frames"


BAD_IMAGES = {
    "unknown encoding": dict(encoding="rgb9"),
    "truncated data": dict(truncate=True),
    "zero size": dict(height=0, width=0, step=0),
    "step smaller than a row": dict(step=100),
}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_input_is_counted_and_the_next_good_frame_is_answered(io, node_process, kind):
    bad = good_frame(seed=7)
    spec = dict(BAD_IMAGES[kind])
    if spec.pop("truncate", False):
        bad.data = bad.data[: len(bad.data) // 3]
    for field, value in spec.items():
        setattr(bad, field, value)
    if bad.height == 0:
        bad.data = b""
    send_until_dropped(io, bad, f"the {kind} frame")
    assert not answered(io, bad)
    send_and_wait_for_answer(io, good_frame(seed=8))
    assert node_process.returncode is None
    assert "dropped an input frame" in node_process.output


def test_a_frame_of_a_new_size_is_noted_and_served(io, node_process):
    send_and_wait_for_answer(io, good_frame(480, 640))
    before = io.diagnostics.count("size_changes")
    mask = send_and_wait_for_answer(io, good_frame(240, 320))
    assert (mask.height, mask.width) == (240, 320)
    io.diagnostics.wait_for_count("size_changes", before + 1)
    node_process.wait_for_output("frame size changed from 640x480 to 320x240", timeout=5)


def test_overlay_is_rendered_only_while_someone_subscribes(ros_peer, io):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    def settled_counts(frames: int) -> tuple[int, int]:
        published = io.diagnostics.count("frames_published")
        for _ in range(frames):
            send_and_wait_for_answer(io, good_frame(seed=3))
        io.diagnostics.wait_for_count("frames_published", published + frames)
        return io.diagnostics.count("overlays_rendered"), io.diagnostics.count("frames_published")

    rendered, _ = settled_counts(1)
    assert settled_counts(3)[0] == rendered, "overlay computed without a subscriber"

    overlays = Inbox()
    topic = f"{NAMESPACE}/segmentation/overlay"
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    subscription = ros_peer.create_subscription(Image, topic, overlays, reliable)
    frame = good_frame(seed=4)
    publish_until(
        io.camera,
        frame,
        lambda: any(m.header.stamp == frame.header.stamp for m in overlays.messages),
        20,
        "an overlay",
    )
    overlay = overlays.with_stamp(frame.header.stamp, 1.0, "the overlay")
    assert (overlay.encoding, overlay.height, overlay.width) == ("bgr8", 480, 640)
    assert overlay.header.frame_id == frame.header.frame_id
    io.diagnostics.wait_for_count("overlays_rendered", rendered + 1)

    ros_peer.destroy_subscription(subscription)
    wait_until(lambda: ros_peer.count_subscribers(topic) == 0, 10, "the overlay unsubscription")
    time.sleep(0.5)
    rendered, _ = settled_counts(1)
    assert settled_counts(3)[0] == rendered, "overlay still computed after unsubscribing"


def test_enable_service_deactivates_and_activates(ros_peer, io):
    """The compatibility alias of the lifecycle transitions, private to the node."""
    from std_srvs.srv import SetBool

    service = f"{NAMESPACE}/perception/enable"
    try:
        response = call_service(ros_peer, SetBool, service, SetBool.Request(data=False))
        assert response.success and response.message == "inactive"
        wait_until(lambda: io.camera.get_subscription_count() == 0, 10, "the node to unsubscribe")
        wait_until(lambda: io.diagnostics.value("enabled") == "false", 10, "diagnostics: inactive")
    finally:
        response = call_service(ros_peer, SetBool, service, SetBool.Request(data=True))
    assert response.success and response.message == "active"
    wait_until(lambda: io.camera.get_subscription_count() == 1, 10, "the node to resubscribe")
    send_and_wait_for_answer(io, good_frame(seed=5))


def test_run_time_parameters_are_validated_and_configure_time_ones_held(ros_peer, io):
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter, parameter_value_to_python
    from std_srvs.srv import Trigger

    def set_parameter(name: str, value):
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]
        )
        return call_service(
            ros_peer, SetParameters, f"{NAMESPACE}/perception/set_parameters", request
        )

    changed = ("smoothing.method", "smoothing.ema_alpha")
    values = call_service(
        ros_peer,
        GetParameters,
        f"{NAMESPACE}/perception/get_parameters",
        GetParameters.Request(names=list(changed)),
        idempotent=True,
    ).values
    original = {name: parameter_value_to_python(v) for name, v in zip(changed, values, strict=True)}
    try:
        _check_run_time_parameters(io, ros_peer, set_parameter, Trigger)
    finally:
        for name, value in original.items():
            assert set_parameter(name, value).results[0].successful


def _check_run_time_parameters(io, ros_peer, set_parameter, Trigger) -> None:

    # Outside the declared range: rclpy refuses it with the range.
    result = set_parameter("smoothing.ema_alpha", 5.0).results[0]
    assert not result.successful and "out of range" in result.reason
    # On the open end of (0, 1], which a descriptor range cannot express: the node refuses it.
    result = set_parameter("smoothing.ema_alpha", 0.0).results[0]
    assert not result.successful
    assert "parameter 'smoothing.ema_alpha' must be a number in (0, 1]" in result.reason
    result = set_parameter("stereo_slop_ms", 20.0).results[0]
    assert not result.successful and "take(s) effect at configure" in result.reason
    result = set_parameter("autostart", False).results[0]
    assert not result.successful and "read-only" in result.reason
    assert set_parameter("smoothing.method", "ema").results[0].successful
    assert set_parameter("smoothing.ema_alpha", 0.5).results[0].successful

    first, second = good_frame(seed=11), good_frame(seed=12)
    send_and_wait_for_answer(io, first)
    send_and_wait_for_answer(io, second)
    activity = io.activity.with_stamp(second.header.stamp, 5.0, "the smoothed activity")
    raw_confidence = activity.raw_confidence
    assert activity.probabilities[activity.raw_class_id] != pytest.approx(raw_confidence)

    response = call_service(
        ros_peer, Trigger, f"{NAMESPACE}/perception/reset_smoothing", Trigger.Request()
    )
    assert response.success
    third = good_frame(seed=12)
    send_and_wait_for_answer(io, third)
    activity = io.activity.with_stamp(third.header.stamp, 5.0, "the activity after a reset")
    assert activity.confidence == pytest.approx(activity.raw_confidence)


def test_diagnostics_describe_rates_latency_drops_and_model(io, offline_predictor):
    bad = good_frame(seed=9)
    bad.encoding = "rgb9"
    before = send_until_dropped(io, bad, "the bad frame")
    published = io.diagnostics.count("frames_published")
    send_and_wait_for_answer(io, good_frame(seed=10))
    io.diagnostics.wait_for_count("frames_published", published + 1)
    values = io.diagnostics.latest
    for key in (
        "input_rate_hz",
        "output_rate_hz",
        "latency_p50_ms",
        "latency_p95_ms",
        "inference_p50_ms",
        "dropped.stale",
        "dropped.too_old",
        "dropped.unpaired",
        "dropped.bad_input",
        "dropped.inference_error",
        "dropped.out_of_memory",
    ):
        float(values[key])
    assert int(values["frames_published"]) > published
    assert int(values["dropped.bad_input"]) > before
    assert values["device"] == "cpu" and values["precision"] == "fp32"
    assert values["model"] == "vit_tiny_patch14"
    assert values["model_hash"] == offline_predictor.info.checkpoint_hash
    assert values["input_topics"] == f"{NAMESPACE}/image"
    assert 0 < float(values["latency_p50_ms"]) <= float(values["latency_p95_ms"])


def test_sigterm_stops_the_node_cleanly(tiny_checkpoint):
    assert_stops_cleanly(f"{NAMESPACE}_sigterm", tiny_checkpoint, signal.SIGTERM)
