"""Relays messages from one topic to another in its own process: the far end of DDS round trips.

Usage: relay_node.py --relay endoarss_ros/msg/SurgicalActivity in_topic out_topic [--relay ...]
Prints "ready" once every publisher and subscription exists, and exits cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


def import_message_type(name: str) -> type:
    package, kind, type_name = name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), type_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--relay", nargs=3, action="append", metavar=("TYPE", "IN", "OUT"))
    parser.add_argument("--best-effort", action="store_true")
    args = parser.parse_args()

    rclpy.init()
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = Node("relay")
    reliability = ReliabilityPolicy.BEST_EFFORT if args.best_effort else ReliabilityPolicy.RELIABLE
    qos = QoSProfile(depth=10, reliability=reliability)
    for type_name, in_topic, out_topic in args.relay:
        msg_type = import_message_type(type_name)
        publisher = node.create_publisher(msg_type, out_topic, qos)
        node.create_subscription(msg_type, in_topic, publisher.publish, qos)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
