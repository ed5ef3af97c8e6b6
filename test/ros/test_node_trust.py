"""The node's trust output: a FrameTrust on ~/trust for every answered frame with that frame's
header, and a ``<node>: trust`` status in /diagnostics that latches ERROR by hysteresis, clears
again, and goes STALE when frames stop."""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from perception_harness import Inbox
from ros_harness import wait_until
from test_node_in_process import camera, frame_message, newest_status, perception_node

from endoarss_ros.data.synthetic.dataset import generate_frame

pytestmark = pytest.mark.ros

SEED = 53  # unseen by training and by the other trust tests


def trust_inbox(peer) -> Inbox:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from endoarss_ros.msg import FrameTrust

    inbox = Inbox()
    peer.create_subscription(
        FrameTrust, "trust", inbox, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    )
    return inbox


def trust_status(ctx) -> DiagnosticStatus | None:
    return newest_status(ctx, "trust")


def trust_level(ctx) -> int | None:
    status = trust_status(ctx)
    return None if status is None else status.level


def answer(ctx, publisher, inbox: Inbox, image: np.ndarray):
    """Publish one frame with a fresh stamp until its FrameTrust arrives. A frame sent again
    too soon could be judged twice, and the hysteresis counts frames: resend only after a wait
    no loaded machine has needed for an answer."""
    message = frame_message(image, ctx.peer.get_clock().now().to_msg())
    for _ in range(10):
        publisher.publish(message)
        try:
            judged = inbox.with_stamp(message.header.stamp, 3.0, "the frame's trust")
        except AssertionError:
            continue
        assert sum(m.header.stamp == message.header.stamp for m in inbox.messages) == 1, (
            "a frame was judged twice: the hysteresis counts below would be off"
        )
        return judged
    raise AssertionError("the frame got no FrameTrust")


def judged_until(ctx, publisher, inbox: Inbox, image: np.ndarray, level: int) -> None:
    """Frames like `image` until /diagnostics shows the trust `level`: a status without a
    frame in its period is STALE, so a level shown for one period only could be missed."""
    deadline = time.monotonic() + 20.0
    while trust_level(ctx) != level:
        assert time.monotonic() < deadline, f"trust status {trust_level(ctx)}, not {level}"
        answer(ctx, publisher, inbox, image)
        time.sleep(0.1)


def test_trust_per_frame_and_latched_in_diagnostics(offline_predictor):
    clean = [generate_frame(SEED, index, (192, 240)).image for index in range(6)]
    black = np.zeros((192, 240, 3), np.uint8)
    # A random model's masks say nothing about instruments: that check is off here.
    with perception_node(
        offline_predictor, "/trusted", **{"trust.output.instrument_fraction_warn": 0.0}
    ) as ctx:
        inbox = trust_inbox(ctx.peer)
        publisher = camera(ctx.peer, "image")
        wait_until(lambda: publisher.get_subscription_count() == 1, 10, "the node's subscription")

        first = answer(ctx, publisher, inbox, clean[0])
        assert first.header.frame_id == "ecm"
        assert first.level == first.OK == 0, first.summary
        assert first.summary == "OK"
        assert np.isnan(first.ood_score) and np.isnan(first.confidence)  # neither in this file
        assert "blur" in list(first.check_names)
        judged_until(ctx, publisher, inbox, clean[0], DiagnosticStatus.OK)
        status = trust_status(ctx)
        values = {kv.key: kv.value for kv in status.values}
        assert values["signals"].startswith("image checks (the checkpoint has no feature")

        levels = [answer(ctx, publisher, inbox, black) for _ in range(3)]
        assert all(m.level == m.ERROR for m in levels)
        assert "dark_blocks" in list(levels[0].reasons)
        assert [m.latched_level for m in levels] == [0, 0, 2]  # ERROR after 3 of 5
        judged_until(ctx, publisher, inbox, black, DiagnosticStatus.ERROR)
        assert "dark_blocks" in trust_status(ctx).message

        latched = [answer(ctx, publisher, inbox, image).latched_level for image in clean[1:6]]
        assert latched == [2, 2, 2, 2, 0]  # cleared after 5 clean frames
        judged_until(ctx, publisher, inbox, clean[0], DiagnosticStatus.OK)

        # No more frames: the trust status goes stale rather than repeating the last level.
        wait_until(lambda: trust_level(ctx) == DiagnosticStatus.STALE, 10, "trust STALE")
        assert "no frame judged" in trust_status(ctx).message


def test_trust_is_stale_before_the_first_frame_and_the_log_names_the_missing_signals(
    offline_predictor,
):
    with perception_node(offline_predictor, "/untrusted") as ctx:
        wait_until(lambda: trust_level(ctx) is not None, 10, "a trust status")
        assert trust_level(ctx) == DiagnosticStatus.STALE
        assert "no frame judged yet" in trust_status(ctx).message
