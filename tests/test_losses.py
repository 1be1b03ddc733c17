"""The training losses: agreement with torch and with hand computations, gradients, and resolve."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from deconfound.errors import ConfigError
from deconfound.losses import (
    LOSSES,
    bce,
    cross_entropy,
    dynamic_weights,
    emotic_discrete,
    make_loss,
    multiplicative,
    resolve,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _multiclass(b: int = 6, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(b, c, generator=g), torch.randint(0, c, (b,), generator=g)


def _multilabel(b: int = 6, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(b, c, generator=g), (torch.rand(b, c, generator=g) < 0.4).float()


def test_registry_names() -> None:
    assert set(LOSSES) == {"cross_entropy", "bce", "emotic_discrete"}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_torch(smoothing: float) -> None:
    logits, target = _multiclass()
    expected = F.cross_entropy(logits, target, label_smoothing=smoothing)
    torch.testing.assert_close(cross_entropy(logits, target, label_smoothing=smoothing), expected)


def test_bce_matches_torch() -> None:
    logits, target = _multilabel()
    torch.testing.assert_close(
        bce(logits, target), F.binary_cross_entropy_with_logits(logits, target)
    )
    pw = [1.0, 2.0, 0.5, 3.0]
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(pw))
    torch.testing.assert_close(bce(logits, target, pos_weight=pw), expected)


def test_dynamic_weights_by_hand() -> None:
    target = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float32)
    # shares: 3/4, 2/4, 0 (class 2 absent)
    expected = torch.tensor([1 / math.log(1.2 + 0.75), 1 / math.log(1.2 + 0.5), 1e-4])
    weights = dynamic_weights(target)
    assert weights.shape == (3,)
    assert not weights.requires_grad
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(
        dynamic_weights(target, c=2.0)[:2], torch.tensor([1 / math.log(2.75), 1 / math.log(2.5)])
    )


def test_dynamic_weights_rejects_small_c() -> None:
    with pytest.raises(ValueError, match="c > 1"):
        dynamic_weights(torch.ones(2, 3), c=1.0)


def test_emotic_discrete_matches_loop_formula() -> None:
    values = [[0.9, -0.2, 0.0, 1.5], [0.3, 1.0, 0.0, -0.7], [1.0, 0.4, 0.0, 0.2]]
    logits = torch.tensor(values, requires_grad=True)
    target = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 1]])
    b, c = target.shape
    expected = 0.0
    for n in range(b):
        row = 0.0
        for i in range(c):
            count = sum(float(target[k, i]) for k in range(b))
            w = 1 / math.log(1.2 + count / b) if count > 0 else 1e-4
            row += w * (values[n][i] - float(target[n, i])) ** 2
        expected += row / c
    expected /= b
    loss = emotic_discrete(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    loss.backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    exact = logits.detach() == target  # e.g. (1,1), (2,0), column 2 (absent, all zeros)
    assert exact.sum() >= 5
    assert (grad[exact] == 0).all()
    assert (grad[~exact] != 0).all()


def test_multiplicative_single_modality_is_plain_loss() -> None:
    logits, target = _multiclass()
    torch.testing.assert_close(
        multiplicative([logits], target, task="multiclass"), cross_entropy(logits, target)
    )
    logits, target = _multilabel()
    torch.testing.assert_close(
        multiplicative([logits], target, task="multilabel"), bce(logits, target)
    )


def test_multiplicative_two_modalities_multiclass_elementwise() -> None:
    (a, target), (b, _) = _multiclass(seed=1), _multiclass(seed=2)
    beta = 2.0
    rows = torch.arange(len(target))
    pa, pb = a.softmax(-1)[rows, target], b.softmax(-1)[rows, target]
    expected = (-((1 - pb) ** beta) * pa.log() - (1 - pa) ** beta * pb.log()).mean()
    torch.testing.assert_close(
        multiplicative([a, b], target, task="multiclass", beta=beta), expected
    )


def test_multiplicative_two_modalities_multilabel_elementwise() -> None:
    (a, target), (b, _) = _multilabel(seed=3), _multilabel(seed=4)
    beta = 1.5
    pa = torch.where(target == 1, a.sigmoid(), 1 - a.sigmoid())
    pb = torch.where(target == 1, b.sigmoid(), 1 - b.sigmoid())
    expected = (-((1 - pb) ** beta) * pa.log() - (1 - pa) ** beta * pb.log()).mean()
    got = multiplicative([a, b], target, task="multilabel", beta=beta)
    torch.testing.assert_close(got, expected)


def test_multiplicative_three_modalities_weight_exponent() -> None:
    target = torch.tensor([0])
    zs = [torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[-0.5, 0.0]])]
    p = [z.softmax(-1)[0, 0] for z in zs]
    beta = 2.0  # exponent beta / (M - 1) = 1
    expected = -sum((1 - p[(i + 1) % 3]) * (1 - p[(i + 2) % 3]) * p[i].log() for i in range(3))
    torch.testing.assert_close(multiplicative(zs, target, task="multiclass", beta=beta), expected)


def _weight_on_b(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, beta: float) -> float:
    """The weight of modality b's term, read from the gradient (weights are constants)."""
    b = b.clone().requires_grad_(True)
    (g_mult,) = torch.autograd.grad(multiplicative([a, b], target, task="multiclass", beta=beta), b)
    (g_plain,) = torch.autograd.grad(cross_entropy(b, target), b)
    ratio = g_mult / g_plain
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.flatten()[0].item()))
    return ratio.flatten()[0].item()


def test_confident_modality_suppresses_the_other() -> None:
    target = torch.tensor([1])
    b = torch.tensor([[0.3, -0.4, 0.1]])
    beta = 2.0
    unsure = torch.zeros(1, 3)
    confident = torch.tensor([[-4.0, 6.0, -4.0]])
    for a in (unsure, confident):
        p_a = a.softmax(-1)[0, 1].item()
        assert _weight_on_b(a, b, target, beta) == pytest.approx((1 - p_a) ** beta, rel=1e-4)
    assert _weight_on_b(confident, b, target, beta) < 1e-3 < _weight_on_b(unsure, b, target, beta)


def test_multiplicative_gradients_reach_every_modality() -> None:
    for task, make in (("multiclass", _multiclass), ("multilabel", _multilabel)):
        target = make(seed=0)[1]
        zs = [make(seed=s)[0].requires_grad_(True) for s in (5, 6, 7)]
        multiplicative(zs, target, task=task).backward()
        for z in zs:
            assert z.grad is not None
            assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_multiplicative_rejects_bad_input() -> None:
    logits, target = _multiclass()
    with pytest.raises(ValueError, match="at least one"):
        multiplicative([], target, task="multiclass")
    with pytest.raises(ValueError, match="equal logit shapes"):
        multiplicative([logits, logits[:, :3]], target, task="multiclass")
    with pytest.raises(ValueError, match="target must have shape"):
        multiplicative([logits, logits], target[:3], task="multiclass")
    with pytest.raises(ValueError, match="target must have shape"):
        multiplicative([logits], target, task="multilabel")
    with pytest.raises(ValueError, match="task"):
        multiplicative([logits], target, task="regression")  # type: ignore[arg-type]


def test_resolve() -> None:
    assert resolve("auto", "multiclass") == "cross_entropy"
    assert resolve("auto", "multilabel") == "bce"
    assert resolve("cross_entropy", "multiclass") == "cross_entropy"
    assert resolve("emotic_discrete", "multilabel") == "emotic_discrete"
    with pytest.raises(ConfigError, match="unknown loss 'multiplicative'"):
        resolve("multiplicative", "multiclass")  # combines modality heads, not a main loss
    msg = "loss 'emotic_discrete' needs multi-label targets; data set 'caer_s' is multiclass"
    with pytest.raises(ConfigError, match=msg):
        resolve("emotic_discrete", "multiclass", dataset="caer_s")
    with pytest.raises(ConfigError, match="needs multi-label"):
        resolve("bce", "multiclass")
    with pytest.raises(ConfigError, match="'cross_entropy' needs single-label"):
        resolve("cross_entropy", "multilabel", dataset="emotic")
    with pytest.raises(ConfigError, match="unknown loss 'focal'.*auto, cross_entropy, bce"):
        resolve("focal", "multiclass")
    with pytest.raises(ConfigError, match="task"):
        resolve("auto", "regression")


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("cross_entropy", "multiclass"),
        ("bce", "multilabel"),
        ("emotic_discrete", "multilabel"),
        ("multiplicative", "multiclass"),
        ("multiplicative", "multilabel"),
    ],
)
def test_sgd_steps_reduce_the_loss(name: str, task: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 5)
    true_w = torch.randn(5, 4)
    scores = x @ true_w
    target = scores.argmax(dim=1) if task == "multiclass" else (scores > 0).float()
    heads = [torch.nn.Linear(5, 4) for _ in range(2 if name == "multiplicative" else 1)]
    params = [p for h in heads for p in h.parameters()]
    opt = torch.optim.SGD(params, lr=0.2)

    def loss_value() -> torch.Tensor:
        outs = [h(x) for h in heads]
        if name == "multiplicative":
            return multiplicative(outs, target, task=task)
        return LOSSES[name](outs[0], target)

    start = loss_value().item()
    for _ in range(20):
        opt.zero_grad()
        loss_value().backward()
        opt.step()
    end = loss_value().item()
    assert math.isfinite(end)
    assert end < 0.9 * start


def test_make_loss_binds_and_checks_arguments() -> None:
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    loss = make_loss("auto", {"label_smoothing": 0.1}, "multiclass")
    assert torch.allclose(
        loss(logits, target), F.cross_entropy(logits, target, label_smoothing=0.1)
    )
    with pytest.raises(ConfigError, match="unknown argument 'smoothing' of loss 'cross_entropy'"):
        make_loss("cross_entropy", {"smoothing": 0.1}, "multiclass")
