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

from endoarss_ros.bags.schema import CLOCK, BagError, stream_qos
from endoarss_ros.bags.storage import BagReader
from endoarss_ros.ros.transport import configure_large_image_transport

from .ros_bridge import StopFlag, message_class, to_rclpy


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
            raise BagError(f"remapping {item!r} is not FROM:=TO")
        remap[source] = target
    return remap


def play_bag(path: Path, options: PlayOptions) -> PlayResult:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    if options.rate <= 0:
        raise BagError(f"rate must be positive, got {options.rate}")
    # Before the participant exists: camera-sized frames need the large-image profile.
    configure_large_image_transport(os.environ)
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bag_player", context=context)
    try:
        with StopFlag() as stop, BagReader(path) as bag:
            for topic in options.topics:
                bag.connection(topic)
            for topic in options.remap:
                bag.connection(topic)
            wanted = list(options.topics) or list(bag.topics)
            publishers = {}
            for topic in wanted:
                connection = bag.connection(topic)
                offered = connection.ext.offered_qos_profiles
                qos = to_rclpy(offered[0] if offered else stream_qos(True))
                name = options.remap.get(topic, topic)
                publishers[topic] = node.create_publisher(
                    message_class(connection.msgtype), name, qos
                )
            clock_type = message_class(CLOCK)
            clock = (
                node.create_publisher(clock_type, "/clock", to_rclpy(stream_qos(False, 1)))
                if options.clock_hz > 0
                else None
            )
            _wait_for_subscribers(node, options, stop)
            if options.delay_s > 0:
                stop.event.wait(options.delay_s)
            result = _play(bag, publishers, clock, clock_type, options, stop)
            # Reliable subscribers may still be fetching the last messages.
            stop.event.wait(options.linger_s)
        return result
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _wait_for_subscribers(node, options: PlayOptions, stop: StopFlag) -> None:
    deadline = time.monotonic() + options.wait_timeout_s
    for topic in options.wait_for:
        while node.count_subscribers(topic) < 1 and not stop:
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
            size += len(message.data)
        if first is None:
            raise BagError(f"bag {str(bag.path)!r} has no messages after the start offset")
        if not options.loop or stop:
            break
    seconds = time.monotonic() - started
    lateness.sort()
    p95 = lateness[min(len(lateness) - 1, int(0.95 * len(lateness)))] if lateness else 0.0
    return PlayResult(messages=count, bytes=size, seconds=seconds, lateness_p95_ms=p95)
