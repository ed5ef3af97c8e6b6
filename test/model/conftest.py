"""Fixtures for the model tests: deterministic seeds, bounded CPU threads, tiny configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from endoarss_ros.model.config import EndoARSSConfig
from endoarss_ros.model.endoarss import EndoARSS, get_preset


@pytest.fixture(autouse=True)
def _deterministic() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> EndoARSSConfig:
    """The tiny preset: 4 blocks of width 64, levels (1, 3), LoRA r4, TESLA r2, SMA on."""
    return get_preset("vit_tiny_patch14")


def realistic_layerscale(module: torch.nn.Module) -> None:
    """Set LayerScale gammas to pretrained-like magnitudes.

    timm initialises them to 1e-5, which makes a random ViT almost an identity on the patch
    embedding and would let differences inside the blocks (adapters, merging) go unnoticed.
    """
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                param.uniform_(0.5, 1.5)


@pytest.fixture
def make_model() -> Callable[[EndoARSSConfig], EndoARSS]:
    """Build an EndoARSS model whose frozen blocks matter (see ``realistic_layerscale``)."""

    def make(config: EndoARSSConfig) -> EndoARSS:
        model = EndoARSS(config)
        realistic_layerscale(model)
        return model

    return make
