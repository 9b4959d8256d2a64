"""SupCon and InfoNCE against values computed by hand (plain Python, no torch) on small inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conla_training.models.contrastive import info_nce_loss, supcon_loss


def _unit(angle_deg: float) -> list[float]:
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a)]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def _supcon_by_hand(z: list[list[float]], y: list[int], tau: float) -> float:
    losses = []
    for i in range(len(z)):
        if y[i] < 0:
            continue
        others = [a for a in range(len(z)) if a != i and y[a] >= 0]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(math.exp(_dot(z[i], z[a]) / tau) for a in others)
        losses.append(-sum(math.log(math.exp(_dot(z[i], z[p]) / tau) / denominator) for p in positives)
                      / len(positives))
    return sum(losses) / len(losses)


def _info_nce_by_hand(a: list[list[float]], b: list[list[float]], tau: float) -> float:
    z = a + b
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(_dot(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(_dot(z[i], z[positive]) / tau) / denominator)
    return total / (2 * n)


def test_supcon_two_classes_matches_hand_value():
    angles, labels, tau = [0.0, 30.0, 180.0, 210.0], [0, 0, 1, 1], 0.5
    z = [_unit(a) for a in angles]
    # Every anchor has its positive 30° away (cos √3/2) and negatives 150° and 180° away (cos −√3/2, −1).
    c = math.sqrt(3) / 2
    expected = -math.log(math.exp(c / tau) / (math.exp(c / tau) + math.exp(-c / tau) + math.exp(-1 / tau)))
    assert _supcon_by_hand(z, labels, tau) == pytest.approx(expected)
    got = supcon_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(labels), tau)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_supcon_unlabelled_items_and_singletons_are_left_out():
    angles, labels, tau = [0.0, 20.0, 90.0, 200.0, 270.0], [3, 3, -1, 7, 3], 0.07
    z = [_unit(a) for a in angles]
    expected = _supcon_by_hand(z, labels, tau)  # item 2 unlabelled; item 3 (label 7) has no positive
    got = supcon_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(labels), tau)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_supcon_without_any_positive_is_zero_and_differentiable():
    z = torch.tensor([_unit(0.0), _unit(90.0)], requires_grad=True)
    loss = supcon_loss(z, torch.tensor([0, 1]), 0.07)
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None


def test_info_nce_matches_hand_value():
    a = [_unit(0.0), _unit(100.0), _unit(220.0)]
    b = [_unit(10.0), _unit(80.0), _unit(250.0)]
    tau = 0.07
    got = info_nce_loss(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), tau)
    assert got.item() == pytest.approx(_info_nce_by_hand(a, b, tau), rel=1e-9)


def test_info_nce_two_pairs_closed_form():
    # Pairs identical, the two pairs orthogonal: every row sees exp(1/τ) (positive) vs 2·exp(0) (negatives).
    tau = 0.5
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2.0))
    assert info_nce_loss(a, a.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_losses_fall_when_positives_align():
    torch.manual_seed(0)
    z = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    optimiser = torch.optim.SGD([z], lr=0.5)
    first = None
    for _ in range(30):
        loss = supcon_loss(F.normalize(z, dim=-1), labels, 0.1) + info_nce_loss(
            F.normalize(z[::2], dim=-1), F.normalize(z[1::2], dim=-1), 0.1)
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5 * first
