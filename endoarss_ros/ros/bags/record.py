"""`bag record`: record the perception node's outputs (or any topics) to a bag.

Messages are written as received, serialised, with the receive time as log time: the node's
clock, so under use_sim_time the bag time a player publishes on /clock. `bag eval` turns that
into latency. Messages that arrive before the first /clock (the latched label map) are held
and written at the first clock time. Each topic's connection is created with the QoS its
publisher offers, so the bag replays as the node published.

Every `flush_period_s` (0.5 s) what was received becomes a complete bag on disk, metadata.yaml
included (:mod:`endoarss_ros.bags.durable`): a recorder killed with SIGKILL leaves a bag that
`bag play`, `bag eval` and rosbags read, short of the messages of its last half second.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from endoarss_ros.bags.formats import DEFAULT_ROS_DISTRO
from endoarss_ros.bags.infer import output_topics
from endoarss_ros.bags.schema import (
    ACTIVITY,
    IMAGE,
    LABEL_MAP,
    TRUST,
    BagError,
    latched_qos,
    stream_qos,
)
from endoarss_ros.bags.storage import BagWriter
from endoarss_ros.ros.transport import configure_large_image_transport

from .ros_bridge import StopFlag, from_rclpy, message_class, to_rclpy


@dataclass(frozen=True)
class RecordOptions:
    namespace: str = "/endoarss"
    topics: Sequence[str] = ()
    use_sim_time: bool = False
    count: int = 0
    duration_s: float = 0.0
    idle_timeout_s: float = 0.0
    discovery_timeout_s: float = 10.0
    storage: str = "mcap"
    ros_distro: str = DEFAULT_ROS_DISTRO
    """The distribution whose `ros2 bag` must open the bag (:mod:`endoarss_ros.bags.formats`)."""
    flush_period_s: float = 0.5
    """How often what was received becomes a complete bag on disk: the most a SIGKILL (or a
    power cut, less the operating system's write-back) loses."""


def node_outputs(namespace: str) -> dict[str, str]:
    """A mono node's outputs under ``namespace``, named as `bag infer` writes them."""
    topics = output_topics(namespace)
    return {
        topics.activity: ACTIVITY,
        topics.trust: TRUST,
        **dict.fromkeys(topics.masks, IMAGE),
        topics.labels: LABEL_MAP,
    }


def record_bag(path: Path, options: RecordOptions) -> dict[str, int]:
    """Record until `count` messages on the first topic, `duration_s`, `idle_timeout_s` without
    messages after the first, or SIGINT / SIGTERM; returns the message count per topic."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    # Before the participant exists: camera-sized frames need the large-image profile.
    configure_large_image_transport(os.environ)
    context = rclpy.Context()
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(
        "bag_recorder",
        context=context,
        parameter_overrides=[Parameter("use_sim_time", value=options.use_sim_time)],
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    counts: dict[str, int] = {}
    try:
        topics = _resolve_types(node, executor, options)
        with (
            StopFlag() as stop,
            BagWriter(path, options.storage, durable=True, ros_distro=options.ros_distro) as bag,
        ):
            recorder = _Recorder(node, bag, topics, counts)
            print(f"recording {', '.join(topics)} to {path}", flush=True)
            started = flushed = time.monotonic()
            first_topic = next(iter(topics))
            while not stop:
                executor.spin_once(timeout_sec=0.05)
                recorder.report_matches()
                now = time.monotonic()
                if now - flushed >= options.flush_period_s:
                    # A complete bag on disk: a killed recorder loses only the last period.
                    bag.flush()
                    flushed = now
                if options.count and counts.get(first_topic, 0) >= options.count:
                    break
                if options.duration_s and now - started >= options.duration_s:
                    break
                idle = None if recorder.last_message is None else now - recorder.last_message
                if options.idle_timeout_s and idle is not None and idle >= options.idle_timeout_s:
                    break
            recorder.flush()
        return counts
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _resolve_types(node, executor, options: RecordOptions) -> dict[str, str]:
    """Topic -> type: the node's outputs are known; other topics are looked up in the graph."""
    known = node_outputs(options.namespace)
    if not options.topics:
        return known
    topics = {topic: known[topic] for topic in options.topics if topic in known}
    deadline = time.monotonic() + options.discovery_timeout_s
    while len(topics) < len(options.topics):
        graph = dict(node.get_topic_names_and_types())
        for topic in options.topics:
            if topic not in topics and graph.get(topic):
                topics[topic] = graph[topic][0]
        if len(topics) == len(options.topics):
            break
        if time.monotonic() > deadline:
            missing = [t for t in options.topics if t not in topics]
            raise BagError(f"no publisher of {', '.join(missing)} found to learn its type")
        executor.spin_once(timeout_sec=0.1)
    return {topic: topics[topic] for topic in options.topics}


class _Recorder:
    def __init__(self, node, bag: BagWriter, topics: dict[str, str], counts: dict[str, int]):
        self._node = node
        self._bag = bag
        self._counts = counts
        self._added: set[str] = set()
        self._held: list[tuple[str, bytes]] = []
        self._matched: set[str] = set()
        self.last_message: float | None = None
        self._subscriptions = {}
        for topic, msgtype in topics.items():
            qos = latched_qos() if msgtype == LABEL_MAP else stream_qos(True, 100)
            self._subscriptions[topic] = node.create_subscription(
                message_class(msgtype),
                topic,
                lambda data, topic=topic: self._receive(topic, data),
                to_rclpy(qos),
                raw=True,
            )
        self._types = topics

    def _receive(self, topic: str, data: bytes) -> None:
        now = self._node.get_clock().now().nanoseconds
        if now == 0:
            # No /clock yet under use_sim_time.
            self._held.append((topic, data))
            return
        self._release_held(now)
        self._write(topic, now, data)

    def _release_held(self, log_time: int) -> None:
        streamed = sum(self._types[topic] != LABEL_MAP for topic, _ in self._held)
        if streamed:
            print(
                f"warning: {streamed} messages arrived before the first /clock and are logged at "
                "its time, so their latency is wrong; let the player wait for /clock subscribers "
                "(bag play --wait-for /clock)",
                file=sys.stderr,
                flush=True,
            )
        for topic, data in self._held:
            self._write(topic, log_time, data)
        self._held.clear()

    def _write(self, topic: str, log_time: int, data: bytes) -> None:
        if topic not in self._added:
            self._bag.add_topic(topic, self._types[topic], self._offered(topic))
            self._added.add(topic)
        self._bag.write_raw(topic, log_time, data)
        self._counts[topic] = self._counts.get(topic, 0) + 1
        self.last_message = time.monotonic()

    def _offered(self, topic: str):
        publishers = self._node.get_publishers_info_by_topic(topic)
        if publishers:
            return from_rclpy(publishers[0].qos_profile)
        return latched_qos() if self._types[topic] == LABEL_MAP else stream_qos(True)

    def report_matches(self) -> None:
        for topic, subscription in self._subscriptions.items():
            if topic not in self._matched and subscription.get_publisher_count() > 0:
                self._matched.add(topic)
                print(f"matched {topic}", flush=True)

    def flush(self) -> None:
        """Messages still held when recording stops are written at the last clock time (or
        their arrival order at time 1 ns when no clock ever came)."""
        self._release_held(max(self._node.get_clock().now().nanoseconds, 1))
