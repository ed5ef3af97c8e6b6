"""The node as a managed (lifecycle) node, driven across processes through its lifecycle
services as a lifecycle manager or `ros2 lifecycle set` would: every transition, a configure
that fails and is retried, and a model switched by cleanup -> set -> configure without a
restart."""

from __future__ import annotations

import numpy as np
import pytest
from perception_harness import Inbox, call_service, scene_frames, start_perception_node
from ros_harness import wait_until

pytestmark = pytest.mark.ros

NAMESPACE = "/lifecycle"
NODE = f"{NAMESPACE}/perception"


def state(peer, node: str = NODE) -> str:
    from lifecycle_msgs.srv import GetState

    request = GetState.Request()
    return call_service(
        peer, GetState, f"{node}/get_state", request, idempotent=True
    ).current_state.label


def transition(peer, label: str, node: str = NODE) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(label=label))
    return call_service(peer, ChangeState, f"{node}/change_state", request).success


def set_parameter(peer, name: str, value):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return call_service(peer, SetParameters, f"{NODE}/set_parameters", request).results[0]


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory):
    from endoarss_ros.inference import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("second") / "second.safetensors",
        input_size=(42, 56),
        activity_names=("resting", "dissecting"),
        seed=3,
    )


def frame(stamp, seed: int):
    from std_msgs.msg import Header

    from endoarss_ros.image_conversion import numpy_to_image

    return numpy_to_image(scene_frames(96, 128, 1, seed=seed)[0], "rgb8", Header(stamp=stamp))


def test_every_transition_across_processes(ros_peer, tmp_path, tiny_checkpoint, second_checkpoint):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from endoarss_ros.msg import LabelMap, SurgicalActivity
    from endoarss_ros.ros import qos

    missing = tmp_path / "missing.safetensors"
    node = start_perception_node(NAMESPACE, missing, autostart=False)
    try:
        node.wait_for_output(r"waiting unconfigured", timeout=90)
        assert state(ros_peer) == "unconfigured"

        # A configure that fails leaves the node unconfigured and able to configure again.
        assert not transition(ros_peer, "configure")
        assert state(ros_peer) == "unconfigured"
        node.wait_for_output(r"configure failed: .*missing\.safetensors", timeout=30)
        assert set_parameter(ros_peer, "checkpoint", str(tiny_checkpoint)).successful

        labels = Inbox()
        ros_peer.create_subscription(LabelMap, f"{NAMESPACE}/labels", labels, qos.latched_qos())
        activity = Inbox()
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        ros_peer.create_subscription(SurgicalActivity, f"{NAMESPACE}/activity", activity, reliable)
        camera = ros_peer.create_publisher(Image, f"{NAMESPACE}/image", reliable)

        assert transition(ros_peer, "configure")
        assert state(ros_peer) == "inactive"
        first_labels = labels.wait_for(lambda m: True, 30, "the label map at configure")
        assert camera.get_subscription_count() == 0, "an inactive node must not subscribe"
        # Configure-time parameters are held while configured.
        held = set_parameter(ros_peer, "checkpoint", str(second_checkpoint))
        assert not held.successful and "cleanup" in held.reason

        assert transition(ros_peer, "activate")
        assert state(ros_peer) == "active"
        wait_until(lambda: camera.get_subscription_count() == 1, 10, "the node to subscribe")
        stamp = ros_peer.get_clock().now().to_msg()
        camera.publish(frame(stamp, seed=1))
        answer = activity.with_stamp(stamp, 30, "an answer while active")
        assert len(answer.probabilities) == len(first_labels.activity_names)

        assert transition(ros_peer, "deactivate")
        assert state(ros_peer) == "inactive"
        wait_until(lambda: camera.get_subscription_count() == 0, 10, "the node to unsubscribe")

        # Switch the model without restarting the process.
        assert transition(ros_peer, "cleanup")
        assert state(ros_peer) == "unconfigured"
        node.wait_for_output(r"model and device memory freed", timeout=30)
        assert set_parameter(ros_peer, "checkpoint", str(second_checkpoint)).successful
        assert transition(ros_peer, "configure")
        second_labels = labels.wait_for(
            lambda m: tuple(m.activity_names) == ("resting", "dissecting"),
            30,
            "the second model's label map",
        )
        assert second_labels.model_hash != first_labels.model_hash
        assert transition(ros_peer, "activate")
        wait_until(lambda: camera.get_subscription_count() == 1, 10, "the node to resubscribe")
        stamp = ros_peer.get_clock().now().to_msg()
        camera.publish(frame(stamp, seed=2))
        answer = activity.with_stamp(stamp, 30, "an answer from the second model")
        assert len(answer.probabilities) == 2
        assert np.isclose(sum(answer.probabilities), 1.0, atol=1e-4)

        assert transition(ros_peer, "shutdown")
        assert state(ros_peer) == "finalized"
    finally:
        node.stop()
        node.kill()
    assert node.returncode == 0, node.output
    assert "Traceback" not in node.output


def test_shutdown_from_active_and_a_clean_exit_that_leaves_the_graph(ros_peer, tiny_checkpoint):
    """After the process exits, peers see the node gone at once, not after the DDS participant
    lease (20 s), so a node started again under the same name is not shadowed by the old one."""
    namespace = "/lifecycle_exit"
    name = f"{namespace}/perception"
    node = start_perception_node(namespace, tiny_checkpoint)
    try:
        node.wait_for_output(r"\bready:", timeout=90)
        assert state(ros_peer, name) == "active"
        assert transition(ros_peer, "shutdown", name)
        assert state(ros_peer, name) == "finalized"
    finally:
        node.stop()
        node.kill()
    assert node.returncode == 0, node.output
    assert "Traceback" not in node.output

    def gone() -> bool:
        return ("perception", namespace) not in ros_peer.get_node_names_and_namespaces()

    wait_until(gone, 5, "the exited node to leave the ROS graph")
