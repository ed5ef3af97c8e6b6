"""LoRA, TESLA and the assembled model: equivalence at init, merging, gradients, shapes."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from endoarss_ros.model.backbone import build_vit
from endoarss_ros.model.config import EndoARSSConfig, LoRAConfig, TeslaConfig
from endoarss_ros.model.endoarss import EndoARSS, create_model
from endoarss_ros.model.lora import LoRALinear, LowRankAdapter, inject_lora

# Merging adds (alpha/r)·B·A to W in float32: the merged and unmerged forwards then differ only
# by rounding. Observed differences are ~1e-6; this bound is loose enough for any BLAS order.
MERGE_ATOL = 1e-5
MERGE_RTOL = 1e-4


def _variants(config: EndoARSSConfig) -> dict[str, EndoARSSConfig]:
    # alpha != rank so that the LoRA scaling (alpha / rank) is exercised.
    tesla = config.replace(
        lora=dataclasses.replace(config.lora, alpha=2.5 * config.lora.rank),
        tesla=dataclasses.replace(config.tesla, alpha=1.5 * config.tesla.rank),
    )
    return {"tesla": tesla, "shared_only": tesla.replace(tesla=TeslaConfig(enabled=False))}


def _train_steps(model: EndoARSS, steps: int = 3, size: int = 56) -> None:
    """A few Adam steps on random data so every adapter and head moves away from its init."""
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        x = torch.randn(2, 3, size, size)
        activity = torch.randint(0, model.config.num_activities, (2,))
        mask = torch.randint(0, model.config.num_seg_classes, (2, size, size))
        out = model(x)
        loss = F.cross_entropy(out["activity"], activity) + F.cross_entropy(
            out["segmentation"], mask
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def test_lora_linear_equals_frozen_linear_at_init_and_merges() -> None:
    linear = nn.Linear(12, 20)
    lora = LoRALinear.from_linear(linear, rank=3, alpha=6.0)
    assert lora.weight is linear.weight and lora.bias is linear.bias
    assert not lora.weight.requires_grad and lora.lora_A.requires_grad
    assert torch.count_nonzero(lora.lora_B) == 0
    x = torch.randn(4, 7, 12)
    assert torch.equal(lora(x), linear(x))

    with torch.no_grad():
        lora.lora_B.normal_()
    expected = linear(x) + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    torch.testing.assert_close(lora(x), expected)
    before = lora(x)
    lora.merge()
    assert lora.merged
    torch.testing.assert_close(lora(x), before, atol=MERGE_ATOL, rtol=MERGE_RTOL)
    torch.testing.assert_close(F.linear(x, lora.weight, lora.bias), before, atol=1e-5, rtol=1e-4)
    lora.unmerge()
    torch.testing.assert_close(lora(x), before, atol=MERGE_ATOL, rtol=MERGE_RTOL)


def test_inject_lora_wraps_exactly_the_targets(tiny_config: EndoARSSConfig) -> None:
    vit = build_vit(tiny_config.backbone)
    count = inject_lora(vit.blocks, ("qkv", "fc2"), rank=2, alpha=2.0)
    assert count == 2 * tiny_config.backbone.depth
    for block in vit.blocks:
        assert isinstance(block.attn.qkv, LoRALinear)
        assert isinstance(block.mlp.fc2, LoRALinear)
        assert type(block.attn.proj) is nn.Linear
        assert type(block.mlp.fc1) is nn.Linear
    with pytest.raises(ValueError, match="already carries"):
        inject_lora(vit.blocks, ("qkv",), rank=2, alpha=2.0)


@pytest.mark.parametrize("variant", ["tesla", "shared_only"])
def test_adapted_backbone_equals_frozen_backbone_at_init(
    tiny_config: EndoARSSConfig, make_model, variant: str
) -> None:
    """B = 0: the adapted features equal timm's own forward of the same frozen weights."""
    config = _variants(tiny_config)[variant]
    # timm's forward resizes the position table its own way; use the same here (positions
    # as Meta resizes them: test_model_dinov2_positions.py).
    config = config.replace(backbone=dataclasses.replace(config.backbone, pos_embed_resize="timm"))
    backbone = make_model(config).backbone
    plain = build_vit(config.backbone)
    plain.load_state_dict(backbone.frozen_state_dict())
    x = torch.randn(2, 3, 70, 98)
    with torch.no_grad():
        features = backbone(x)
        reference = plain.forward_intermediates(
            x,
            indices=list(config.backbone.feature_levels),
            norm=True,
            output_fmt="NCHW",
            intermediates_only=True,
            return_prefix_tokens=True,
        )
    for task in ("activity", "segmentation"):
        assert len(features[task]) == len(reference)
        for level, (patches, prefix) in zip(features[task], reference, strict=True):
            assert level.patches.shape == (2, 64, 5, 7)
            torch.testing.assert_close(level.patches, patches, atol=0, rtol=0)
            torch.testing.assert_close(level.cls, prefix[:, 0], atol=0, rtol=0)


def test_adapted_model_equals_unadapted_model_at_init(
    tiny_config: EndoARSSConfig, make_model
) -> None:
    plain_config = tiny_config.replace(
        lora=LoRAConfig(enabled=False), tesla=TeslaConfig(enabled=False)
    )
    adapted = make_model(tiny_config).eval()
    plain = EndoARSS(plain_config).eval()
    missing, unexpected = plain.load_state_dict(adapted.state_dict(), strict=False)
    assert not missing
    assert unexpected and all(k.endswith(("lora_A", "lora_B")) for k in unexpected)
    x = torch.randn(2, 3, 56, 84)
    with torch.no_grad():
        a, b = adapted(x), plain(x)
    for key in ("activity", "segmentation"):
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


@pytest.mark.parametrize("variant", ["tesla", "shared_only"])
def test_merged_equals_unmerged_after_training(
    tiny_config: EndoARSSConfig, make_model, variant: str
) -> None:
    model = make_model(_variants(tiny_config)[variant])
    _train_steps(model)
    lora_b = [m.lora_B for m in model.backbone.lora_modules()]
    assert all(torch.count_nonzero(b) > 0 for b in lora_b)
    x = torch.randn(2, 3, 84, 70)
    with torch.no_grad():
        unmerged = model(x)
        model.merge()
        assert model.merged
        merged = model(x)
    for key in ("activity", "segmentation"):
        torch.testing.assert_close(merged[key], unmerged[key], atol=MERGE_ATOL, rtol=MERGE_RTOL)
    model.unmerge()
    assert not model.merged


def test_merged_model_matches_a_plain_vit_with_folded_weights(
    tiny_config: EndoARSSConfig, make_model
) -> None:
    """After merge() the shared stream is an ordinary ViT: no LoRA computation remains."""
    model = make_model(_variants(tiny_config)["shared_only"])
    _train_steps(model, steps=2)
    model.merge()
    plain = build_vit(tiny_config.backbone)
    plain.load_state_dict(model.backbone.frozen_state_dict())
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ours = model.backbone(x)["segmentation"][-1].patches
        theirs = plain.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)
    torch.testing.assert_close(ours, theirs[0], atol=0, rtol=0)


def test_only_adapters_sma_and_heads_are_trainable(tiny_config: EndoARSSConfig, make_model) -> None:
    model = make_model(tiny_config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name in trainable:
        assert name.endswith(("lora_A", "lora_B")) or name.startswith(
            ("seg_head.", "activity_head.")
        ), name
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.vit.") for n in frozen)
    assert not any(n.endswith(("lora_A", "lora_B")) for n in frozen)
    assert any(".sma." in n for n in trainable)
    assert any(n.startswith("backbone.task_adapters.") for n in trainable)

    out = model(torch.randn(2, 3, 56, 56))
    (out["activity"].sum() + out["segmentation"].mean()).backward()
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    for module in model.backbone.lora_modules():
        assert torch.count_nonzero(module.lora_B.grad) > 0


@pytest.mark.parametrize(
    ("loss_task", "other_task"), [("segmentation", "activity"), ("activity", "segmentation")]
)
def test_task_adapters_get_gradient_only_from_their_own_task(
    tiny_config: EndoARSSConfig, make_model, loss_task: str, other_task: str
) -> None:
    model = make_model(_variants(tiny_config)["tesla"])
    _train_steps(model, steps=1)  # B != 0, so A receives gradient as well
    model.zero_grad(set_to_none=True)
    model.train()
    out = model(torch.randn(2, 3, 56, 56))
    out[loss_task].square().mean().backward()
    own = model.backbone.task_adapters[loss_task]
    other = model.backbone.task_adapters[other_task]
    for param in own.parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) > 0
    for param in other.parameters():
        assert param.grad is None or torch.count_nonzero(param.grad) == 0
    for module in model.backbone.lora_modules():  # the shared adapters serve both tasks
        assert torch.count_nonzero(module.lora_B.grad) > 0


def test_tesla_task_feature_is_the_block_with_task_lora_on_fc2(
    tiny_config: EndoARSSConfig, make_model
) -> None:
    """h_task = block l run on the shared input with fc2 = shared LoRA + the task's adapter."""
    config = _variants(tiny_config)["tesla"]
    scale = config.tesla.alpha / config.tesla.rank
    model = make_model(config)
    _train_steps(model, steps=2)
    backbone = model.backbone
    level = tiny_config.backbone.feature_levels[0]
    block = backbone.vit.blocks[level]
    inputs: dict[str, torch.Tensor] = {}
    handle = block.register_forward_pre_hook(lambda m, args: inputs.update(x=args[0]))
    x = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        features = backbone(x)
    handle.remove()
    for task in ("activity", "segmentation"):
        adapter: LowRankAdapter = backbone.task_adapters[task][str(level)]
        assert torch.count_nonzero(adapter.lora_B) > 0
        a, b = adapter.lora_A, adapter.lora_B
        handle = block.mlp.fc2.register_forward_hook(
            lambda m, args, out, a=a, b=b: out + scale * (args[0] @ a.T @ b.T)
        )
        with torch.no_grad():
            reference = backbone.vit.norm(block(inputs["x"]))
        handle.remove()
        got = features[task][0]
        torch.testing.assert_close(got.cls, reference[:, 0], atol=1e-6, rtol=1e-5)
        patches = reference[:, 1:].transpose(1, 2).reshape(1, 64, 3, 4)
        torch.testing.assert_close(got.patches, patches, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(features["activity"][0].cls, features["segmentation"][0].cls)


def test_shared_only_switch_removes_task_adapters(tiny_config: EndoARSSConfig) -> None:
    model = EndoARSS(tiny_config.replace(tesla=TeslaConfig(enabled=False)))
    assert model.backbone.task_adapters is None
    assert not any("task_adapters" in n for n, _ in model.named_parameters())
    features = model.backbone(torch.randn(1, 3, 28, 28))
    assert features["activity"] is not features["segmentation"]
    assert all(a is s for a, s in zip(features["activity"], features["segmentation"], strict=True))


@pytest.mark.parametrize("size", [(224, 224), (448, 448), (266, 364)])
def test_output_shapes(tiny_config: EndoARSSConfig, size: tuple[int, int]) -> None:
    model = create_model(tiny_config, num_activities=4, num_seg_classes=6).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert set(out) == {"activity", "segmentation"}
    assert out["activity"].shape == (2, 4)
    assert out["segmentation"].shape == (2, 6, *size)
    assert torch.isfinite(out["activity"]).all() and torch.isfinite(out["segmentation"]).all()


@pytest.mark.parametrize("size", [(225, 224), (224, 230), (7, 14)])
def test_input_not_a_multiple_of_14_is_rejected(
    tiny_config: EndoARSSConfig, size: tuple[int, int]
) -> None:
    model = EndoARSS(tiny_config)
    with pytest.raises(ValueError, match="multiples of 14"):
        model(torch.randn(1, 3, *size))


def test_register_and_swiglu_backbones_run(tiny_config: EndoARSSConfig) -> None:
    backbone = tiny_config.backbone
    for variant in (
        {"reg_tokens": 4},
        {"ffn": "swiglu", "mlp_ratio": 5.0},
    ):
        config = tiny_config.replace(backbone=dataclasses.replace(backbone, **variant))
        model = EndoARSS(config).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 42, 70))
        assert out["segmentation"].shape == (1, 7, 42, 70)
        assert model.backbone.vit.num_prefix_tokens == 1 + variant.get("reg_tokens", 0)


def test_a_deep_copy_taps_its_own_layers(tiny_config: EndoARSSConfig, make_model) -> None:
    """TESLA reads fc2 inputs through hooks; a copy (e.g. EMA weights) must use its own."""
    model = make_model(_variants(tiny_config)["tesla"])
    _train_steps(model, steps=1)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for param in twin.backbone.task_adapters.parameters():
            param.mul_(2.0)
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        original, copied = model(x), twin(x)
        again = model(x)
    for key in ("activity", "segmentation"):
        assert torch.equal(original[key], again[key])
        assert not torch.allclose(original[key], copied[key])
    for block in (*model.backbone.vit.blocks, *twin.backbone.vit.blocks):
        assert getattr(block.mlp.fc2, "tesla_input", None) is None
