"""A tiny random-weight checkpoint, built once per session (non-square input on purpose, so a
height/width mix-up cannot pass)."""

from __future__ import annotations

import pytest

TINY_INPUT_SIZE = (56, 70)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from endoarss_ros.inference import write_random_checkpoint

    return write_random_checkpoint(
        tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors", input_size=TINY_INPUT_SIZE
    )


@pytest.fixture(scope="session")
def cpu_predictor(tiny_checkpoint):
    from endoarss_ros.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu", warmup_batch_sizes=(1, 2))
