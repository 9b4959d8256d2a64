"""NSVQ: nearest-code assignment, noise substitution, gradients, dead-code replacement."""

from __future__ import annotations

import pytest
import torch

from conla_training.models.nsvq import NSVQ


def _quantizer(**kwargs) -> NSVQ:
    torch.manual_seed(0)
    return NSVQ(num_codes=8, dim=4, **kwargs)


def test_eval_returns_the_nearest_code():
    q = _quantizer().eval()
    d = torch.randn(5, 3, 4)
    out, codes = q(d)
    assert out.shape == (5, 3, 4) and codes.shape == (5, 3) and codes.dtype == torch.int64
    brute = torch.cdist(d.reshape(-1, 4), q.codebook).argmin(1).reshape(5, 3)
    assert torch.equal(codes, brute)
    assert torch.equal(out, q.codebook[codes])


def test_training_output_is_input_plus_noise_of_the_residual_norm():
    q = _quantizer().train()
    d = torch.randn(64, 4)
    out, codes = q(d)
    residual = (d - q.codebook[codes]).norm(dim=-1)
    assert torch.allclose((out - d).norm(dim=-1), residual, atol=1e-5)
    assert int(q.usage.sum()) == 64


def test_gradients_reach_input_and_codebook():
    q = _quantizer().train()
    d = torch.randn(16, 4, requires_grad=True)
    out, _ = q(d)
    out.pow(2).sum().backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0


@pytest.mark.parametrize("source", ["inputs", "used_codes"])
def test_dead_code_replacement_fires_for_an_unused_code(source):
    q = _quantizer(source=source, threshold=0.01).train()
    with torch.no_grad():
        q.codebook[5] = 100.0  # far from every input: never chosen
    before = q.codebook.detach().clone()
    q(torch.randn(256, 4))
    assert q.usage[5] == 0
    replaced = q.replace_dead_codes()
    after = q.codebook.detach()
    dead = [k for k in range(8) if k == 5 or (before[k] != after[k]).any()]
    assert 5 in dead and replaced == len(dead)
    assert not torch.allclose(after[5], before[5])
    assert after[5].abs().max() < 10  # moved to where the data (or the live codes) are
    for k in set(range(8)) - set(dead):
        assert torch.equal(after[k], before[k])  # live codes untouched
    assert int(q.usage.sum()) == 0  # counts restart


def test_no_replacement_when_every_code_is_used():
    q = _quantizer(threshold=0.01).train()
    d = q.codebook.detach().repeat(10, 1) + 0.01 * torch.randn(80, 4)
    q(d)
    before = q.codebook.detach().clone()
    assert q.replace_dead_codes() == 0
    assert torch.equal(q.codebook.detach(), before)


def test_perplexity():
    q = _quantizer()
    assert q.perplexity(torch.zeros(10, dtype=torch.long)).item() == pytest.approx(1.0)
    assert q.perplexity(torch.arange(8)).item() == pytest.approx(8.0, rel=1e-5)


def test_noise_scale_shrinks_the_substituted_noise():
    torch.manual_seed(0)
    q = NSVQ(8, 4, noise_scale=0.25).train()
    d = torch.randn(64, 4)
    out, codes = q(d)
    residual = (d - q.codebook[codes]).norm(dim=-1)
    assert torch.allclose((out - d).norm(dim=-1), 0.25 * residual, atol=1e-5)
    assert NSVQ(8, 4).noise_scale == 1.0  # NSVQ as published by default


def test_noise_scale_is_validated_in_the_config():
    from conla_ros.core.config import ConfigError, config_from_dict
    from conla_training.models.lam import LAMConfig

    with pytest.raises(ConfigError, match="noise_scale"):
        config_from_dict(LAMConfig, {"quantizer": {"noise_scale": 1.5}})
