"""`bag play`: publish a bag through rclpy with its recorded timing.

Messages go out in log-time order, each at `start + (log time - first) / rate` on the wall
clock, as serialised bytes (no decode and re-encode), on publishers that offer the QoS stored
in the bag. With `clock_hz` > 0, /clock carries the bag time, published just before every
message and `clock_hz` times per second in between, so nodes with use_sim_time follow it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rosbags.interfaces import ConnectionExtRosbag2

from endoarss_ros.bags.schema import CLOCK, BagError, stream_qos
from endoarss_ros.bags.storage import BagReader
from endoarss_ros.cli_options import OptionError
from endoarss_ros.ros.transport import configure_large_image_transport

from .ros_bridge import StopFlag, message_class, to_rclpy

if TYPE_CHECKING:
    from rclpy.publisher import Publisher


@dataclass(frozen=True)
class PlayOptions:
    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    remap: dict[str, str] = field(default_factory=dict)
    topics: Sequence[str] = ()
    clock_hz: float = 0.0
    wait_for: Sequence[str] = ()
    wait_timeout_s: float = 30.0
    delay_s: float = 0.0
    linger_s: float = 1.0


@dataclass(frozen=True)
class PlayResult:
    messages: int
    bytes: int
    seconds: float
    lateness_p95_ms: float


def parse_remap(items: Sequence[str]) -> dict[str, str]:
    remap = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not sep or not source or not target:
            raise OptionError("--remap", f"must look like FROM:=TO, got {item!r}")
        remap[source] = target
    return remap


def remap_arguments(remap: dict[str, str]) -> list[str]:
    """The node's remap rules in rcl's syntax: ``--ros-args -r FROM:=TO ...``."""
    if not remap:
        return []
    rules = [arg for source, target in remap.items() for arg in ("-r", f"{source}:={target}")]
    return ["--ros-args", *rules]


def _shown(remap: dict[str, str]) -> str:
    return ", ".join(f"{source}:={target}" for source, target in remap.items())


def play_bag(path: Path, options: PlayOptions) -> PlayResult:
    import rclpy
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.signals import SignalHandlerOptions

    from endoarss_ros.ros.rclpy_compat import RCLInvalidROSArgsError

    if options.rate <= 0:
        raise OptionError("--rate", f"must be positive, got {options.rate:g}")
    # Before the participant exists: camera-sized frames need the large-image profile.
    configure_large_image_transport(os.environ)
    context = rclpy.Context()
    # Explicit arguments: rclpy would otherwise parse the command line, where `--remap A:=B`
    # reads as a global remap rule in rcl's deprecated syntax.
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node(
            "bag_player", context=context, cli_args=remap_arguments(options.remap)
        )
    except RCLInvalidROSArgsError as exc:
        rclpy.try_shutdown(context=context)
        reason = str(exc).split(", at ")[0]
        raise OptionError("--remap", f"{_shown(options.remap)} is not valid: {reason}") from exc
    try:
        with StopFlag() as stop, BagReader(path) as bag:
            for topic in options.topics:
                bag.connection(topic)
            for topic in options.remap:
                bag.connection(topic)
            wanted = list(options.topics) or list(bag.topics)
            publishers: dict[str, Publisher] = {}
            for topic in wanted:
                connection = bag.connection(topic)
                assert isinstance(connection.ext, ConnectionExtRosbag2)  # a rosbag2 reader's
                offered = connection.ext.offered_qos_profiles
                qos = to_rclpy(offered[0] if offered else stream_qos(True))
                # The node's remap rules rename the publisher's topic.
                publishers[topic] = node.create_publisher(
                    message_class(connection.msgtype), topic, qos
                )
            clock_type = message_class(CLOCK)
            clock: Publisher | None = (
                node.create_publisher(clock_type, "/clock", to_rclpy(stream_qos(False, 1)))
                if options.clock_hz > 0
                else None
            )
            try:
                _wait_for_subscribers(
                    node, [*publishers.values(), *([clock] if clock else [])], options, stop
                )
            except InvalidTopicNameException as exc:
                raise OptionError("--wait-for", str(exc).splitlines()[0]) from exc
            if options.delay_s > 0:
                stop.event.wait(options.delay_s)
            result = _play(bag, publishers, clock, clock_type, options, stop)
            # Reliable subscribers may still be fetching the last messages.
            stop.event.wait(options.linger_s)
        return result
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _wait_for_subscribers(node, publishers, options: PlayOptions, stop: StopFlag) -> None:
    """Until every `wait_for` topic has a subscriber: for a topic this player publishes, one
    matched by its publisher (so the first message reaches it), else one in the graph."""
    ours = {publisher.topic_name: publisher for publisher in publishers}
    deadline = time.monotonic() + options.wait_timeout_s
    for topic in options.wait_for:
        publisher = ours.get(topic)

        def subscribers(topic: str = topic, publisher=publisher) -> int:
            if publisher is not None:
                return publisher.get_subscription_count()
            return node.count_subscribers(topic)

        while subscribers() < 1 and not stop:
            if time.monotonic() > deadline:
                raise BagError(f"no subscriber on {topic!r} within {options.wait_timeout_s} s")
            time.sleep(0.05)


def _clock_message(clock_type: type, ns: int):
    from builtin_interfaces.msg import Time

    return clock_type(clock=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))


def _play(
    bag: BagReader, publishers, clock, clock_type, options: PlayOptions, stop: StopFlag
) -> PlayResult:
    offset_ns = round(options.start_offset_s * 1e9)
    count = size = 0
    lateness: list[float] = []
    started = time.monotonic()
    clock_period = 1.0 / options.clock_hz if options.clock_hz > 0 else None
    while True:
        first: int | None = None
        played = 0
        wall_start = time.monotonic()
        for message in bag.messages(list(publishers)):
            if first is None:
                first = message.log_time + offset_ns
            if message.log_time < first:
                continue
            bag_elapsed = (message.log_time - first) / 1e9
            due = wall_start + bag_elapsed / options.rate
            while not stop:
                now = time.monotonic()
                if now >= due:
                    break
                if clock is not None:
                    assert clock_period is not None  # a clock publisher comes with clock_hz > 0
                    bag_now = first + round((now - wall_start) * options.rate * 1e9)
                    clock.publish(_clock_message(clock_type, bag_now))
                    time.sleep(min(clock_period, due - now))
                else:
                    time.sleep(min(0.05, due - now))
            if stop:
                break
            lateness.append((time.monotonic() - due) * 1e3)
            if clock is not None:
                clock.publish(_clock_message(clock_type, message.log_time))
            publishers[message.topic].publish(bytes(message.data))
            count += 1
            played += 1
            size += len(message.data)
        if first is None:
            raise BagError(f"bag {str(bag.path)!r} has no messages on {', '.join(publishers)}")
        if not played and not stop:
            raise OptionError(
                "--start-offset",
                f"{options.start_offset_s:g} s is past the last message of bag {str(bag.path)!r}",
            )
        if not options.loop or stop:
            break
    seconds = time.monotonic() - started
    lateness.sort()
    p95 = lateness[min(len(lateness) - 1, int(0.95 * len(lateness)))] if lateness else 0.0
    return PlayResult(messages=count, bytes=size, seconds=seconds, lateness_p95_ms=p95)
