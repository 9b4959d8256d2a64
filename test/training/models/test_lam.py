"""The latent action model: shapes, gradient paths, the ConLA split, ablation switches, learning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conla_ros.core.config import ConfigError, config_from_dict, load_config
from conla_training.models.lam import (
    ContrastConfig,
    LAMConfig,
    LatentActionModel,
    QuantizerConfig,
    TwoFrameAttention,
)

TINY = LAMConfig(image_size=32, patch_size=8, width=32, heads=2, encoder_layers=1, decoder_layers=1, mlp_ratio=2.0,
                 contrast=ContrastConfig(visual_dim=8, warmup_steps=0))

# The rows of ConLA's ablation (docs/method.md): LAPA, +action, +visual without reversal, full ConLA.
ABLATIONS = {
    "lapa": dict(action_contrast=False, visual_contrast=False, time_reversal=False),
    "action": dict(action_contrast=True, visual_contrast=False, time_reversal=False),
    "visual_no_reversal": dict(action_contrast=False, visual_contrast=True, time_reversal=False),
    "conla": dict(action_contrast=True, visual_contrast=True, time_reversal=True),
}


def _config(**contrast) -> LAMConfig:
    return dataclasses.replace(TINY, contrast=dataclasses.replace(TINY.contrast, **contrast))


def _batch(b: int = 6, s: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 2, -1])[:b]
    return torch.rand(b, 3, s, s, generator=g), torch.rand(b, 3, s, s, generator=g), labels


@pytest.mark.parametrize("row", sorted(ABLATIONS))
def test_forward_shapes_and_loss_terms(row):
    torch.manual_seed(0)
    model = LatentActionModel(_config(**ABLATIONS[row]))
    o_t, o_tk, labels = _batch()
    extra = {"o_t2": o_t.flip(0), "o_tk2": o_tk.flip(0)} if row == "visual_no_reversal" else {}
    out, loss = model(o_t, o_tk, labels=labels, **extra)
    assert out.recon.shape == (6, 3, 32, 32)
    assert out.codes.shape == (6, 4) and out.codes.dtype == torch.int64
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < 8
    assert out.latent.shape == (6, 4, 32)
    expected = {"mse"} | ({"action"} if "action" in row or row == "conla" else set()) | (
        {"visual"} if "visual" in row or row == "conla" else set())
    assert set(out.losses) == expected
    assert torch.isfinite(loss) and loss.item() == pytest.approx(sum(v.item() for v in out.losses.values()), rel=1e-5)
    loss.backward()
    assert model.patch_embed[1].weight.grad is not None


def test_lapa_has_no_contrastive_heads_and_conla_has_both():
    assert LatentActionModel(_config(**ABLATIONS["lapa"])).visual_proj is None
    assert LatentActionModel(_config(**ABLATIONS["conla"])).visual_proj is not None


def test_contrast_off_during_warmup_gives_mse_only():
    model = LatentActionModel(_config(**ABLATIONS["conla"]))
    o_t, o_tk, labels = _batch()
    out, loss = model(o_t, o_tk, labels=labels, contrast=False)
    assert set(out.losses) == {"mse"} and loss.item() == pytest.approx(out.losses["mse"].item())


def test_visual_contrast_without_reversal_needs_a_second_pair():
    model = LatentActionModel(_config(**ABLATIONS["visual_no_reversal"]))
    o_t, o_tk, labels = _batch()
    with pytest.raises(ValueError, match="second pair"):
        model(o_t, o_tk, labels=labels)


def test_encode_codes_and_reconstruct():
    model = LatentActionModel(TINY).eval()
    o_t, o_tk, _ = _batch()
    codes = model.encode_codes(o_t, o_tk)
    assert codes.shape == (6, 4) and codes.dtype == torch.int64
    out, _ = model(o_t, o_tk, contrast=False)  # eval mode: hard codes, no noise
    assert torch.equal(out.codes, codes)
    assert torch.allclose(model.reconstruct(o_t, codes), out.recon, atol=1e-5)


def test_gradients_reach_the_encoder_through_nsvq():
    """MSE only (no contrastive term): the only path to the encoder is through the quantizer."""
    torch.manual_seed(0)
    model = LatentActionModel(_config(**ABLATIONS["lapa"])).train()
    o_t, o_tk, _ = _batch()
    _, loss = model(o_t, o_tk, contrast=False)
    loss.backward()
    for name in ("patch_embed.1.weight", "encoder.0.spatial.qkv.weight", "encoder.0.temporal.qkv.weight",
                 "action_proj.weight", "quantizer.codebook"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_decoder_queries_are_stop_gradient_patch_embeddings():
    """With the quantizer's output cut off, MSE gives the patch embedding no gradient: the queries are detached."""
    torch.manual_seed(0)
    model = LatentActionModel(_config(**ABLATIONS["lapa"])).train()
    o_t, o_tk, _ = _batch()
    _, emb = model.encode(o_t, o_tk)
    recon = model.decode(emb.detach(), torch.zeros(6, 4, 32))
    F.mse_loss(recon, o_tk).backward()
    assert model.patch_embed[1].weight.grad is None


def test_conla_split_action_latent_uses_only_the_action_half():
    model = LatentActionModel(_config(**ABLATIONS["conla"])).eval()
    h = torch.randn(3, 2, 16, 32)
    changed = h.clone()
    changed[..., 16:] = torch.randn(3, 2, 16, 16)  # the visual half only
    assert torch.equal(model.action_latent(h), model.action_latent(changed))
    assert not torch.equal(model.visual_embedding(h), model.visual_embedding(changed))
    emb = model.visual_embedding(h)
    assert emb.shape == (3, 4 * 8) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_action_latent_is_a_difference_of_frame_encodings():
    model = LatentActionModel(TINY).eval()
    h = torch.randn(2, 2, 16, 32)
    same = torch.stack([h[:, 0], h[:, 0]], dim=1)
    assert torch.allclose(model.action_latent(same), torch.zeros(2, 4, 32), atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_two_frame_attention_equals_softmax_attention(causal):
    torch.manual_seed(0)
    attn = TwoFrameAttention(dim=16, heads=4, causal=causal)
    x = torch.randn(3, 2, 5, 16)  # (B, 2, N, W)
    q, k, v = attn.qkv(x).view(3, 2, 5, 3, 4, 4).unbind(3)  # (B, 2, N, H, Dh)
    to_seq = lambda t: t.permute(0, 2, 3, 1, 4).reshape(3 * 5, 4, 2, 4)  # noqa: E731 - (B·N, H, 2, Dh)
    y = F.scaled_dot_product_attention(to_seq(q), to_seq(k), to_seq(v), is_causal=causal)  # (B·N, H, 2, Dh)
    y = y.reshape(3, 5, 4, 2, 4).permute(0, 3, 1, 2, 4).reshape(3, 2, 5, 16)
    assert torch.allclose(attn(x), attn.proj(y), atol=1e-5)


def test_loss_falls_on_a_tiny_set():
    torch.manual_seed(0)
    model = LatentActionModel(_config(**ABLATIONS["lapa"]))
    o_t, o_tk, _ = _batch(b=6)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        _, loss = model(o_t, o_tk, contrast=False)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="patch_size"):
        config_from_dict(LAMConfig, {"image_size": 60, "patch_size": 8})
    with pytest.raises(ConfigError, match="did you mean 'action_contrast'"):
        config_from_dict(LAMConfig, {"contrast": {"action_contrastt": True}})
    with pytest.raises(ConfigError, match="num_codes"):
        config_from_dict(LAMConfig, {"quantizer": {"num_codes": 1}})
    assert QuantizerConfig().num_codes == 8 and LAMConfig().num_tokens == 4


@pytest.mark.parametrize("name", ["lam.yaml", "lam_tiny.yaml", "lam_lapa_256.yaml", "lam_cpu_small.yaml"])
def test_shipped_configs_load(repo_root, name):
    from conla_training.trainers.lam import LAMRunConfig

    config = load_config(LAMRunConfig, repo_root / "config" / name)
    assert config.model.num_tokens == 4 and config.model.quantizer.num_codes == 8
    assert config.model.quantizer.dim == 32


# --- extension: the action head on the latent (LAOM/CLAM-style few-label supervision) ---------------


def test_action_head_off_by_default_and_validated():
    assert LatentActionModel(TINY).action_head is None
    with pytest.raises(ConfigError, match="action_head_dim"):
        config_from_dict(LAMConfig, {"action_head_dim": -1})
    with pytest.raises(ConfigError, match="action_head_weight"):
        config_from_dict(LAMConfig, {"action_head_dim": 4, "action_head_weight": -0.5})


def test_supervised_pairs_train_the_action_head_and_the_encoder():
    torch.manual_seed(0)
    model = LatentActionModel(dataclasses.replace(_config(**ABLATIONS["conla"]), action_head_dim=4,
                                                  action_head_weight=2.0))
    o_t, o_tk, labels = _batch()
    s_t, s_tk, _ = _batch(b=3, seed=1)
    action = torch.rand(3, 4)
    out, loss = model(o_t, o_tk, labels=labels, supervised=(s_t, s_tk, action))
    assert "supervised" in out.losses
    expected = sum(v.item() for k, v in out.losses.items() if k != "supervised") + 2.0 * out.losses["supervised"].item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    usage_before = model.quantizer.usage.clone()
    loss.backward()
    assert model.action_head.weight.grad is not None and model.action_head.weight.grad.abs().sum() > 0
    assert model.patch_embed[1].weight.grad is not None
    assert torch.equal(model.quantizer.usage, usage_before)  # labelled pairs are not counted by the quantizer


def test_supervised_pairs_need_a_head():
    model = LatentActionModel(TINY)
    o_t, o_tk, labels = _batch()
    with pytest.raises(ValueError, match="action head"):
        model(o_t, o_tk, labels=labels, supervised=(o_t[:2], o_tk[:2], torch.zeros(2, 4)))


def test_run_config_pairs_the_head_with_labelled_episodes(tmp_path):
    from conla_training.trainers.lam import LAMRunConfig

    with pytest.raises(ConfigError, match=r"supervision\.episodes"):
        config_from_dict(LAMRunConfig, {"model": {"action_head_dim": 4}})
    with pytest.raises(ConfigError, match="action_head_dim"):
        config_from_dict(LAMRunConfig, {"supervision": {"episodes": str(tmp_path)}})
    with pytest.raises(ConfigError, match="batch_size"):
        config_from_dict(LAMRunConfig, {"supervision": {"batch_size": 0}})
    config = config_from_dict(LAMRunConfig, {"model": {"action_head_dim": 4},
                                             "supervision": {"episodes": str(tmp_path)}})
    assert config.supervision.batch_size == 16


def test_decoder_residual_adds_o_t_to_the_decoder_output():
    torch.manual_seed(0)
    plain = LatentActionModel(TINY)
    torch.manual_seed(0)
    residual = LatentActionModel(dataclasses.replace(TINY, decoder_residual=True))
    residual.load_state_dict(plain.state_dict())
    o_t, o_tk, _ = _batch()
    codes = plain.eval().encode_codes(o_t, o_tk)
    residual.eval()
    assert torch.allclose(residual.reconstruct(o_t, codes), plain.reconstruct(o_t, codes) + o_t, atol=1e-6)
    emb = residual.patch_embed(residual.patchify(o_t))
    with pytest.raises(ValueError, match="needs o_t"):
        residual.decode(emb, torch.zeros(6, 4, 32))
    assert not LAMConfig().decoder_residual  # LAPA's decoder by default
