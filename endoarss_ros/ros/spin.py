"""Run one node until SIGINT/SIGTERM, for the benchmark's reference nodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from .transport import configure_large_image_transport


def spin_until_stopped(create_node: Callable[[], Node], args: Sequence[str] | None) -> int:
    configure_large_image_transport()
    rclpy.init(args=None if args is None else list(args))
    node: Node | None = None
    try:
        node = create_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT shuts the context down under a callback that may still be publishing; that
        # failure is the requested stop, anything else is not.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
