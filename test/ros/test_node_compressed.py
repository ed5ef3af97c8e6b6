"""The perception node with CompressedImage input, in its own process: JPEG frames from a
camera process at endoscope resolutions, and undecodable input."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from perception_harness import (
    FIRST_STAMP,
    NodeIO,
    assert_stops_cleanly,
    mask_pixels,
    publish_until,
    run_camera_process,
    scene_frames,
    sequence_stamps,
    stamp_ns,
    start_perception_node,
    write_frames,
)
from ros_harness import wait_until

pytestmark = pytest.mark.ros

NAMESPACE = "/compressed"
JPEG_QUALITY = 90


@pytest.fixture(scope="module")
def node_process(tiny_checkpoint):
    process = start_perception_node(NAMESPACE, tiny_checkpoint, input_transport="compressed")
    try:
        process.wait_for_output(r"\bready:", timeout=90)
        yield process
    finally:
        process.stop()
        process.kill()


@pytest.fixture(scope="module")
def io(ros_peer, node_process):
    from sensor_msgs.msg import CompressedImage

    return NodeIO(ros_peer, NAMESPACE, ["image/compressed"], CompressedImage)


def jpeg(frame: np.ndarray, seconds: float):
    from endoarss_ros.image_conversion import numpy_to_compressed

    message = numpy_to_compressed(frame, "rgb8", "jpeg", quality=JPEG_QUALITY)
    message.header.stamp.sec = int(seconds)
    message.header.frame_id = "ecm_left_frame"
    return message


@pytest.mark.parametrize(("height", "width"), [(480, 640), (1024, 1280)])
def test_jpeg_frames_from_a_camera_process_come_back_as_the_predictor_computes_them(
    io, offline_predictor, tmp_path, height, width
):
    from endoarss_ros.image_conversion import compressed_to_numpy

    rate, count, first = 30.0, 45, FIRST_STAMP + width
    frames = scene_frames(height, width, 3, seed=width + 1)
    run_camera_process(
        write_frames(tmp_path / "frames", frames),
        "--topic", f"{NAMESPACE}/image",
        "--transport", "compressed",
        "--jpeg-quality", str(JPEG_QUALITY),
        "--rate", str(rate),
        "--count", str(count),
        "--first-stamp", str(first),
        "--frame-id", "ecm_left_frame",
        "--wait-for-subscribers", "1",
    )  # fmt: skip
    published = sequence_stamps(first, rate, count)
    inbox = io.masks[""]
    wait_until(
        lambda: sum(stamp_ns(m.header.stamp) in published for m in inbox.messages) >= 3,
        20,
        "three answered frames",
    )
    # What the node saw: the same frame through the same JPEG encoder and decoder.
    decoded = [compressed_to_numpy(jpeg(frame, 0), "rgb8") for frame in frames]
    offline = [offline_predictor.predict([frame])[0] for frame in decoded]
    for mask in (m for m in inbox.messages if stamp_ns(m.header.stamp) in published):
        index = published[stamp_ns(mask.header.stamp)] % len(frames)
        assert (mask.height, mask.width, mask.encoding) == (height, width, "mono8")
        assert mask.header.frame_id == "ecm_left_frame"
        np.testing.assert_array_equal(mask_pixels(mask), offline[index].mask)
    activities = [m for m in io.activity.messages if stamp_ns(m.header.stamp) in published]
    assert activities
    for activity in activities:
        index = published[stamp_ns(activity.header.stamp)] % len(frames)
        np.testing.assert_allclose(activity.probabilities, offline[index].activity, atol=1e-6)


@pytest.mark.parametrize(
    "data", [b"\xff\xd8\xff\xe0 not really a jpeg" * 10, b""], ids=["undecodable", "empty"]
)
def test_undecodable_input_is_counted_and_the_next_good_frame_is_answered(io, node_process, data):
    camera = io.cameras[0]
    bad = jpeg(scene_frames(480, 640, 1, seed=1)[0], FIRST_STAMP + 50_000 + len(data))
    bad.data = data
    before = io.diagnostics.count("dropped.bad_input")
    publish_until(
        camera,
        bad,
        lambda: io.diagnostics.count("dropped.bad_input") > before,
        20,
        "the bad frame to be counted",
    )
    good = jpeg(scene_frames(480, 640, 1, seed=2)[0], FIRST_STAMP + 60_000 + len(data))
    publish_until(camera, good, lambda: io.answered(good.header.stamp), 20, "an answer")
    assert not io.answered(bad.header.stamp)
    assert node_process.returncode is None
    assert "dropped an input frame" in node_process.output


def test_sigint_stops_the_node_cleanly(tiny_checkpoint):
    assert_stops_cleanly(
        f"{NAMESPACE}_sigint", tiny_checkpoint, signal.SIGINT, input_transport="compressed"
    )
