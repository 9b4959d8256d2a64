"""The VLA model (conla_training.models.vla): every vision tower × head, losses, statistics, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conla_ros.core.model_spec import ActionSpace
from conla_ros.core.preprocessing import ImagePreprocessing
from conla_training.datasets.episodes import action_statistics
from conla_training.models.vla import VLA, VLAConfig

TINY = dict(preprocessing=ImagePreprocessing(size=16), patch_size=8, vision_width=16, vision_layers=1,
            vision_heads=2, width=16, fusion_layers=1, fusion_heads=2, chunk_length=4, num_bins=8,
            conv_channels=(8, 16), conv_depths=(1, 1))


def tiny(**overrides) -> VLA:
    torch.manual_seed(0)
    return VLA(VLAConfig(**{**TINY, **overrides}))


def inputs(batch: int = 3, proprio: int = 0):
    g = torch.Generator().manual_seed(1)
    out = [torch.randn(batch, 3, 16, 16, generator=g), torch.randn(batch, 384, generator=g)]
    return out + ([torch.randn(batch, proprio, generator=g)] if proprio else [None])


@pytest.mark.parametrize("vision", ["siglip", "vit", "resnet"])
@pytest.mark.parametrize("head", ["latent", "chunk", "bins"])
def test_every_tower_and_head_trains_one_step(vision, head):
    model = tiny(vision=vision, head=head, proprio_dim=5)
    image, instruction, proprio = inputs(proprio=5)
    targets = {"latents": torch.randint(0, 8, (3, 4))} if head == "latent" else {"actions": torch.randn(3, 4, 4)}
    output, loss = model(image, instruction, proprio, **targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.vision_proj.weight.grad is not None and model.queries.grad.abs().sum() > 0
    if head == "latent":
        assert output.logits.shape == (3, 4, 8) and output.codes.shape == (3, 4)
    else:
        assert output.actions.shape == (3, 4, 4)
        assert model.predict_actions(image, instruction, proprio).shape == (3, 4, 4)


@pytest.mark.parametrize(("pool", "tokens"), [(True, 4), (False, 16)])
def test_resnet_tokens_are_the_feature_map_cells(pool, tokens):
    model = tiny(vision="resnet", head="chunk", conv_stem_pool=pool)
    assert model.config.num_patches == tokens  # 16 px / stride 8 (pool) or 4 (no pool), squared
    image, instruction, _ = inputs()
    assert model.features(image, instruction).shape == (3, model.config.num_queries, 16)


def test_resnet_group_norm_has_no_batch_statistics():
    model = tiny(vision="resnet", head="chunk", conv_norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    model.eval()
    image, instruction, _ = inputs()
    one = model.predict_actions(image[:1], instruction[:1])
    assert torch.allclose(one, model.predict_actions(image, instruction)[:1], atol=1e-5)  # batch-independent


@pytest.mark.parametrize(("overrides", "match"), [
    ({"conv_channels": (8, 16), "conv_depths": (1,)}, "equally long"),
    ({"conv_channels": (12, 16), "conv_norm": "group"}, "divisible by 8"),
    ({"conv_channels": (8, 16, 32, 64), "conv_depths": (1, 1, 1, 1)}, "multiple of the resnet's stride"),
    ({"conv_norm": "layer"}, "conv_norm"),
])
def test_resnet_config_errors_name_the_value(overrides, match):
    with pytest.raises(ValueError, match=match):
        VLAConfig(**{**TINY, "vision": "resnet", **overrides})


def test_no_targets_no_loss_and_proprio_required():
    model = tiny(head="chunk", proprio_dim=2)
    image, instruction, proprio = inputs(proprio=2)
    output, loss = model(image, instruction, proprio)
    assert loss is None and output.actions.shape == (3, 4, 4)
    with pytest.raises(ValueError, match="proprio"):
        model(image, instruction)


def test_latent_head_cannot_predict_actions():
    with pytest.raises(ValueError, match="finetune"):
        tiny(head="latent").predict_actions(*inputs()[:2])


def test_normalisation_matches_the_runtime_action_space():
    model = tiny(head="chunk")
    low, high = np.array([-0.5, -1.0, 0.0, -1.0]), np.array([0.5, 2.0, 0.75, 1.0])
    model.set_statistics({"action_low": low, "action_high": high})
    space = ActionSpace(kind="ee_delta", names=("a", "b", "c", "d"), units=("1",) * 4, low=list(low),
                        high=list(high))
    actions = np.random.default_rng(0).normal(size=(5, 4))
    ours = model.normalize_actions(torch.tensor(actions, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, space.normalize(actions), atol=1e-5)
    back = model.denormalize_actions(torch.tensor(ours)).numpy()
    np.testing.assert_allclose(back, actions, atol=1e-5)


def test_padded_chunk_steps_do_not_count():
    model = tiny(head="chunk")
    image, instruction, _ = inputs()
    actions = torch.randn(3, 4, 4)
    mask = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    _, loss = model(image, instruction, actions=actions, action_mask=mask)
    changed = actions.clone()
    changed[:, 2:] += 100.0  # padding only
    _, loss2 = model(image, instruction, actions=changed, action_mask=mask)
    assert torch.allclose(loss, loss2)


def test_quantile_bins_decode_to_training_values():
    rng = np.random.default_rng(0)
    commands = np.column_stack([rng.normal(size=(2000, 3)), rng.choice([-1.0, 1.0], 2000)])
    stats = action_statistics(commands, num_bins=8)
    np.testing.assert_allclose(stats["action_low"], np.percentile(commands, 1, axis=0))
    model = tiny(head="bins")
    model.set_statistics(stats)
    target = torch.tensor(commands[:64], dtype=torch.float32).view(16, 4, 4)
    bins = model.action_bins(target)  # (16, 4, 4)
    assert bins.min() >= 0 and bins.max() < 8
    # Confident logits on the target bins decode to their centres; the gripper (only ±1) decodes exactly.
    logits = torch.nn.functional.one_hot(bins, 8).float() * 50.0
    for mode in ("expected", "argmax"):
        model = tiny(head="bins", bins_decode=mode)
        model.set_statistics(stats)
        decoded = model.decode_bins(logits)
        np.testing.assert_allclose(decoded[..., 3].numpy(), target[..., 3].numpy(), atol=1e-4)
        # A continuous dimension decodes within its bin (8 equal-frequency bins of a normal: ~0.3 wide inside).
        assert (decoded[..., :3] - target[..., :3]).abs().median() < 0.3


@pytest.mark.parametrize(("field", "value", "message"), [
    ("patch_size", 5, "patch_size must divide"),
    ("vision_heads", 3, "multiple of vision_heads"),
    ("head", "tokens", "head must be"),
    ("num_bins", 1, "num_bins"),
])
def test_bad_config_names_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        VLAConfig(**{**TINY, field: value})


def test_statistics_shape_is_checked():
    with pytest.raises(ValueError, match="action_low"):
        tiny(head="chunk").set_statistics({"action_low": np.zeros(3)})
