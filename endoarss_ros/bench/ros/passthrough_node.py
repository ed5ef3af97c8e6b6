"""The transport floor for the benchmark: receives the same image topics as the perception
node and answers each frame (or stereo pair) with a SurgicalActivity that carries only its
header, so publish-to-receive latency here is what DDS and rclpy cost with no work at all.
Only ``endoarss bench node`` starts it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image

from endoarss_ros.inference.stereo import LEFT, RIGHT, StereoPairer
from endoarss_ros.msg import SurgicalActivity
from endoarss_ros.ros import qos
from endoarss_ros.ros.spin import spin_until_stopped

NODE_NAME = "passthrough"


class PassThroughNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        stereo = self.declare_parameter("input_mode", "mono").value == "stereo"
        self._publisher = self.create_publisher(
            SurgicalActivity, "activity", qos.output_qos(qos.ACTIVITY_DEPTH)
        )
        self._pairer: StereoPairer[Image] | None = StereoPairer(15_000_000) if stereo else None
        input_qos = qos.input_qos("sensor_data", 1)
        topics = (("left/image", LEFT), ("right/image", RIGHT)) if stereo else (("image", ""),)
        for topic, side in topics:
            self.create_subscription(
                Image, topic, lambda msg, side=side: self._on_frame(side, msg), input_qos
            )
        self.get_logger().info("ready: pass-through")

    def _on_frame(self, side: str, msg: Image) -> None:
        if self._pairer is not None:
            pair = self._pairer.add(side, Time.from_msg(msg.header.stamp).nanoseconds, msg)
            if pair is None:
                return
            msg = pair.left
        self._publisher.publish(SurgicalActivity(header=msg.header))


def main(args: Sequence[str] | None = None) -> int:
    return spin_until_stopped(PassThroughNode, args)


if __name__ == "__main__":
    sys.exit(main())
