"""A node that cannot work must say why and exit non-zero at start-up, without a traceback.

The cases start together (each process spends seconds importing PyTorch) and are checked one
by one.
"""

from __future__ import annotations

import pytest
from perception_harness import start_perception_node
from ros_harness import wait_until

pytestmark = pytest.mark.ros

CASES = {
    "missing checkpoint": ("missing", {}, 1, r"does not exist or is not a file"),
    "not a checkpoint": ("junk", {}, 1, r"cannot be used: .*not a safetensors file"),
    "no checkpoint parameter": (None, {}, 2, r"parameter 'checkpoint' is required"),
    "negative stereo slop": (
        "tiny",
        {"stereo_slop_ms": -5.0},
        2,
        r"parameter 'stereo_slop_ms' must be a number in \(0, 1000\] ms, got -5\.0",
    ),
    "unknown input mode": (
        "tiny",
        {"input_mode": "quadnocular"},
        2,
        r"parameter 'input_mode' must be one of mono, stereo, side_by_side",
    ),
    "absent CUDA device": ("tiny", {"device": "cuda:7"}, 1, r"device 'cuda:7' requested"),
    "missing parameter file": (
        "tiny",
        {"--params-file": "missing.yaml"},
        2,
        r"parameter 'params_file' cannot be read from '.*missing\.yaml': .*No such file",
    ),
    "malformed parameter file": (
        "tiny",
        {"--params-file": "broken.yaml"},
        2,
        r"parameter 'params_file' cannot be read from '.*broken\.yaml': expected ',' or ']'.* "
        r"at line 4, column 1",
    ),
    "bad QoS override": (
        "tiny",
        {"qos_overrides./startup8/image.subscription.reliability": "bogus"},
        2,
        r"activate failed: parameter 'qos_overrides' cannot be applied: .*bogus",
    ),
    "empty checkpoint": (None, {"checkpoint": ""}, 2, r"parameter 'checkpoint' is required"),
}


@pytest.fixture(scope="module")
def failed_starts(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    junk = folder / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    checkpoints = {
        "missing": folder / "missing.safetensors",
        "junk": junk,
        "tiny": tiny_checkpoint,
        None: None,
    }
    (folder / "broken.yaml").write_text("/**:\n  ros__parameters:\n    device: [unclosed\n")

    def start(index: int, which, parameters: dict):
        parameters = dict(parameters)
        ros_args = []
        if "--params-file" in parameters:
            ros_args = ["--params-file", str(folder / parameters.pop("--params-file"))]
        checkpoint = parameters.pop("checkpoint", checkpoints[which])
        return start_perception_node(f"/startup{index}", checkpoint, *ros_args, **parameters)

    processes = {
        case: start(index, which, parameters)
        for index, (case, (which, parameters, _, _)) in enumerate(CASES.items())
    }
    try:
        for process in processes.values():
            wait_until(lambda p=process: p.returncode is not None, 120, "the node to exit")
        yield processes
    finally:
        for process in processes.values():
            process.kill()


@pytest.mark.parametrize("case", CASES)
def test_start_up_fails_with_a_message_naming_the_problem(failed_starts, case):
    import re

    _, _, exit_code, message = CASES[case]
    process = failed_starts[case]
    if case == "absent CUDA device":
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a CUDA device 7")
    assert process.returncode == exit_code, process.output
    assert re.search(message, process.output), process.output
    assert "Traceback" not in process.output
    assert "autostart is false" not in process.output  # it is true: the start failed
