"""The perception node on a stereo pair of topics, raw and compressed, in its own process:
eyes stamped a few milliseconds apart (as two dVRK capture processes stamp them) are paired,
run as one batch, and answered per eye with each eye's own header."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from perception_harness import (
    FIRST_STAMP,
    NodeIO,
    assert_stops_cleanly,
    mask_pixels,
    run_camera_process,
    scene_frames,
    sequence_stamps,
    stamp_ns,
    start_perception_node,
    write_frames,
)
from ros_harness import wait_until

pytestmark = pytest.mark.ros

EYES = ("left/", "right/")


@pytest.fixture(scope="module", params=["raw", "compressed"])
def transport(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def node_process(tiny_checkpoint, transport):
    process = start_perception_node(
        f"/stereo_{transport}",
        tiny_checkpoint,
        input_mode="stereo",
        input_transport=transport,
        stereo_slop_ms=15.0,
    )
    try:
        process.wait_for_output(r"\bready:", timeout=90)
        yield process
    finally:
        process.stop()
        process.kill()


@pytest.fixture(scope="module")
def io(ros_peer, node_process, transport):
    from sensor_msgs.msg import CompressedImage, Image

    suffix = "/compressed" if transport == "compressed" else ""
    return NodeIO(
        ros_peer,
        f"/stereo_{transport}",
        [f"left/image{suffix}", f"right/image{suffix}"],
        CompressedImage if transport == "compressed" else Image,
        streams=EYES,
    )


def eye_message(transport: str, frame: np.ndarray, seconds: float, frame_id: str):
    from rclpy.time import Time

    from endoarss_ros.image_conversion import numpy_to_compressed, numpy_to_image

    if transport == "compressed":
        message = numpy_to_compressed(frame, "rgb8", "jpeg", quality=90)
    else:
        message = numpy_to_image(frame, "rgb8")
    message.header.stamp = Time(nanoseconds=round(seconds * 1e9)).to_msg()
    message.header.frame_id = frame_id
    return message


def as_node_sees_it(transport: str, frame: np.ndarray) -> np.ndarray:
    from endoarss_ros.image_conversion import compressed_to_numpy

    if transport == "raw":
        return frame
    return compressed_to_numpy(eye_message(transport, frame, 0.0, ""), "rgb8")


@pytest.mark.parametrize(
    ("height", "width", "right_delay_ms"),
    [(480, 640, 4.0), (1024, 1280, 4.0), (480, 640, 0.0)],
    ids=["640x480", "1280x1024", "identical-stamps"],
)
def test_stereo_pairs_from_a_camera_process_are_answered_per_eye(
    io, offline_predictor, transport, tmp_path, height, width, right_delay_ms
):
    rate, count = 30.0, 45
    first = FIRST_STAMP + 20_000 + width + right_delay_ms
    left = scene_frames(height, width, 2, seed=width + 2)
    right = scene_frames(height, width, 2, seed=width + 3)
    run_camera_process(
        write_frames(tmp_path / "left", left),
        "--right-images", str(write_frames(tmp_path / "right", right)),
        "--layout", "stereo",
        "--transport", transport,
        "--left-topic", f"{io.namespace}/left/image",
        "--right-topic", f"{io.namespace}/right/image",
        "--frame-id", "jhu_daVinci/left_frame",
        "--right-frame-id", "jhu_daVinci/right_frame",
        "--right-delay-ms", str(right_delay_ms),
        "--rate", str(rate),
        "--count", str(count),
        "--first-stamp", str(first),
        "--wait-for-subscribers", "1",
    )  # fmt: skip
    published = sequence_stamps(first, rate, count)
    delay_ns = round(right_delay_ms * 1e6)
    left_masks, right_masks = io.masks["left/"], io.masks["right/"]
    wait_until(
        lambda: sum(stamp_ns(m.header.stamp) in published for m in left_masks.messages) >= 2,
        20,
        "two answered pairs",
    )
    offline = {}
    answered = 0
    for mask in [m for m in left_masks.messages if stamp_ns(m.header.stamp) in published]:
        index = published[stamp_ns(mask.header.stamp)] % 2
        if index not in offline:
            pair = [as_node_sees_it(transport, f[index]) for f in (left, right)]
            offline[index] = offline_predictor.predict(pair)
        right_stamp = stamp_ns(mask.header.stamp) + delay_ns
        right_mask = right_masks.wait_for(
            lambda m, expected=right_stamp: stamp_ns(m.header.stamp) == expected,
            5.0,
            "the right eye's mask",
        )
        assert mask.header.frame_id == "jhu_daVinci/left_frame"
        assert right_mask.header.frame_id == "jhu_daVinci/right_frame"
        assert (mask.height, mask.width) == (right_mask.height, right_mask.width) == (height, width)
        np.testing.assert_array_equal(mask_pixels(mask), offline[index][0].mask)
        np.testing.assert_array_equal(mask_pixels(right_mask), offline[index][1].mask)
        answered += 1
    activities = [m for m in io.activity.messages if stamp_ns(m.header.stamp) in published]
    assert answered >= 2 and activities
    for activity in activities:
        assert activity.header.frame_id == "jhu_daVinci/left_frame"
        index = published[stamp_ns(activity.header.stamp)] % 2
        if index in offline:
            both = np.mean([p.activity for p in offline[index]], axis=0)
            np.testing.assert_allclose(activity.probabilities, both, atol=1e-6)


def test_an_eye_without_partner_is_counted_and_the_next_pair_is_answered(io, transport):
    left_camera, right_camera = io.cameras
    frames = scene_frames(480, 640, 2, seed=9)
    base = FIRST_STAMP + 40_000.0 + (transport == "compressed") * 100
    before = io.diagnostics.count("dropped.unpaired")
    for offset in range(8):  # more lone left frames than the pairer keeps, 40 ms apart
        left_camera.publish(eye_message(transport, frames[0], base + offset * 0.04, "left"))
        time.sleep(0.02)
    io.diagnostics.wait_for_count("dropped.unpaired", before + 1)

    left = eye_message(transport, frames[0], base + 1.0, "left")
    right = eye_message(transport, frames[1], base + 1.003, "right")
    deadline = time.monotonic() + 20.0
    while not io.answered(left.header.stamp, "left/"):
        assert time.monotonic() < deadline, "the pair after the lone frames was not answered"
        left_camera.publish(left)
        right_camera.publish(right)
        time.sleep(0.2)
    right_mask = io.masks["right/"].with_stamp(right.header.stamp, 5.0, "the right mask")
    assert right_mask.header.frame_id == "right"


def test_sigint_stops_the_node_cleanly(tiny_checkpoint, transport):
    assert_stops_cleanly(
        f"/stereo_{transport}_sigint",
        tiny_checkpoint,
        signal.SIGINT,
        input_mode="stereo",
        input_transport=transport,
    )
