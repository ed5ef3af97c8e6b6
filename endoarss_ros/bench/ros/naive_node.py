"""A perception node written the way typical ROS 2 PyTorch nodes are, as the benchmark's
baseline: same model and checkpoint, same output topics and values, none of the design.

What makes it typical: the model is loaded as saved (LoRA adapters unmerged) and run in fp32
with PyTorch's default threads (parameter ``cpu_threads`` changes that, to separate the cost
of the thread setting from the cost of the pipeline); each frame is converted on the CPU in
the subscription callback (message bytes -> numpy copy -> float tensor at full resolution ->
normalised -> resized, as ``ToTensor``/``Normalize``/``Resize`` do); inference runs
synchronously in that callback, so frames queue in the subscription while the model works.
Only ``endoarss bench node`` starts it.

The mask is the argmax at the network resolution resized to the frame by nearest neighbour
(OpenCV), and the activity is the softmax: the same numbers the Predictor produces, so a
latency comparison is at equal outputs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import Image

from endoarss_ros.inference.smoothing import ActivitySmoother, SmoothingConfig
from endoarss_ros.inference.stereo import LEFT, RIGHT, StereoPairer
from endoarss_ros.msg import SurgicalActivity
from endoarss_ros.ros.messages import activity_message, mask_message
from endoarss_ros.ros.spin import spin_until_stopped

NODE_NAME = "naive_perception"


class NaivePredictor:
    """Per-frame CPU preprocessing and an unmerged fp32 model: the reference pipeline."""

    def __init__(self, checkpoint: str) -> None:
        from endoarss_ros.model import load_checkpoint

        model, metadata = load_checkpoint(checkpoint, map_location="cpu")
        self.model = model.float().eval()
        self.input_size = tuple(metadata.input_size)
        self.mean = np.asarray(metadata.mean, dtype=np.float32)
        self.std = np.asarray(metadata.std, dtype=np.float32)
        self.activity_names = tuple(metadata.activity_classes)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        pixels = rgb.astype(np.float32) / 255.0
        pixels = (pixels - self.mean) / self.std
        tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous()
        return F.interpolate(
            tensor, size=self.input_size, mode="bilinear", align_corners=False, antialias=True
        )

    @torch.no_grad()
    def predict(self, frames: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(activity probabilities, uint8 mask at the frame's size) per frame."""
        batch = torch.cat([self.preprocess(frame) for frame in frames])
        outputs = self.model(batch)
        activity = torch.softmax(outputs["activity"], dim=1).numpy()
        ids = outputs["segmentation"].argmax(dim=1).to(torch.uint8).numpy()
        results = []
        for index, frame in enumerate(frames):
            height, width = frame.shape[:2]
            mask = cv2.resize(ids[index], (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
            results.append((activity[index], mask))
        return results


def message_to_rgb(msg: Image) -> np.ndarray:
    """What cv_bridge's imgmsg_to_cv2 plus a colour conversion does: a copy per frame."""
    pixels = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)
    if msg.encoding == "bgr8":
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return pixels.copy()


class NaivePerceptionNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        checkpoint = self.declare_parameter("checkpoint", "").value
        stereo = self.declare_parameter("input_mode", "mono").value == "stereo"
        threads = int(self.declare_parameter("cpu_threads", 0).value)
        if threads > 0:
            torch.set_num_threads(threads)
        self.predictor = NaivePredictor(checkpoint)
        self._smoother = ActivitySmoother(SmoothingConfig(method="none"))
        self._activity_pub = self.create_publisher(SurgicalActivity, "activity", 10)
        streams = ("left/", "right/") if stereo else ("",)
        self._mask_pubs = [
            self.create_publisher(Image, f"{prefix}segmentation/mask", 10) for prefix in streams
        ]
        self._pairer: StereoPairer[Image] | None = StereoPairer(15_000_000) if stereo else None
        if stereo:
            for topic, side in (("left/image", LEFT), ("right/image", RIGHT)):
                self.create_subscription(
                    Image, topic, lambda msg, side=side: self._on_eye(side, msg),
                    qos_profile_sensor_data,
                )  # fmt: skip
        else:
            self.create_subscription(
                Image, "image", lambda msg: self._infer([msg]), qos_profile_sensor_data
            )
        self.get_logger().info(f"ready: naive pipeline, {torch.get_num_threads()} threads")

    def _on_eye(self, side: str, msg: Image) -> None:
        assert self._pairer is not None
        pair = self._pairer.add(side, Time.from_msg(msg.header.stamp).nanoseconds, msg)
        if pair is not None:
            self._infer([pair.left, pair.right])

    def _infer(self, messages: list[Image]) -> None:
        frames = [message_to_rgb(msg) for msg in messages]
        results = self.predictor.predict(frames)
        probabilities = np.mean([activity for activity, _ in results], axis=0)
        activity = self._smoother.update(probabilities)
        header = messages[0].header
        self._activity_pub.publish(
            activity_message(header, activity, self.predictor.activity_names)
        )
        for publisher, (_, mask), msg in zip(self._mask_pubs, results, messages, strict=True):
            publisher.publish(mask_message(mask, msg.header))


def main(args: Sequence[str] | None = None) -> int:
    return spin_until_stopped(NaivePerceptionNode, args)


if __name__ == "__main__":
    sys.exit(main())
