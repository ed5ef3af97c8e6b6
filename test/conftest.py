"""Shared fixtures: an isolated ROS 2 domain, node processes that are always torn down, and an
in-test rclpy node spun in the background."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator

import pytest

# Before anything imports rclpy: keep DDS traffic on this machine and away from other test runs.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))

from ros_harness import NodeProcess, python_node, spinning_node


@pytest.fixture
def start_node() -> Iterator[Callable[..., NodeProcess]]:
    """Factory for node processes; every process it started is stopped after the test."""
    started: list[NodeProcess] = []

    def start(name: str, script, *args: str, **kwargs) -> NodeProcess:
        process = python_node(name, script, *args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        process.kill()


@pytest.fixture
def ros_node():
    """An rclpy node in this process, spun by a background executor, in its own context."""
    with spinning_node("test_peer") as node:
        yield node
