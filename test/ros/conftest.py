"""Fixtures for the perception node tests: a tiny checkpoint, the node as a process, and a
peer node in this process that plays camera and consumer.

Every process of the session, this one included, uses the package's large-image Fast DDS
profile (as the README tells camera processes to), set before any participant exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from endoarss_ros.ros.transport import configure_large_image_transport

configure_large_image_transport(os.environ)

from perception_harness import TINY_INPUT_SIZE  # noqa: E402
from ros_harness import spinning_node  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from endoarss_ros.inference import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors", input_size=TINY_INPUT_SIZE
    )


@pytest.fixture(scope="session")
def offline_predictor(tiny_checkpoint):
    """The same checkpoint in this process, to compare the node's outputs with."""
    from endoarss_ros.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu", warmup_batch_sizes=(1, 2))


@pytest.fixture(scope="module")
def ros_peer() -> Iterator:
    """An rclpy node in this process for a whole test module, spun in the background."""
    with spinning_node("test_peer", threads=2) as node:
        yield node
