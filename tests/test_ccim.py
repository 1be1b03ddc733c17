"""CCIM against the paper's formulas computed by hand, the dictionary artifact, and composition."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import run_overrides

from deconfound.causal import CCIM, ConfounderDictionary
from deconfound.config import ModelConfig, load_config
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.methods import create_model

H = [1.0, 2.0]
Z = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
P = [0.5, 0.3, 0.2]


def _small(attention: str) -> CCIM:
    d = ConfounderDictionary(torch.tensor(Z), torch.tensor(P))
    m = CCIM(2, d, attention=attention, proj_dim=2, out_features=2)
    with torch.no_grad():
        m.query.weight.copy_(torch.eye(2))
        m.key.weight.copy_(torch.eye(2))
        if m.score is not None:
            m.score.weight.copy_(torch.tensor([[1.0, -1.0]]))
        m.w_h.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        m.w_g.copy_(torch.tensor([[3.0, 1.0], [0.0, 1.0]]))
        for layer in (m.body[1], m.body[4]):
            layer.weight.zero_()
            layer.bias.zero_()
    return m.eval()


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def _by_hand(attention: str) -> tuple[list[float], list[float], list[float]]:
    if attention == "dot":  # (W_q h)·(W_k z_i) / sqrt(D), D = 2
        scores = [(H[0] * z[0] + H[1] * z[1]) / math.sqrt(2) for z in Z]
    else:  # w_t · tanh(W_q h + W_k z_i), w_t = (1, -1)
        scores = [math.tanh(H[0] + z[0]) - math.tanh(H[1] + z[1]) for z in Z]
    lam = _softmax(scores)
    g = [sum(lam[i] * Z[i][j] * P[i] for i in range(3)) for j in range(2)]
    # do_x = h W_h + g W_g with W_h = [[1, 0], [0, 2]], W_g = [[3, 1], [0, 1]]
    do_x = [H[0] * 1 + g[0] * 3, H[1] * 2 + g[0] * 1 + g[1] * 1]
    return lam, g, do_x


@pytest.mark.parametrize("attention", ["dot", "additive"])
def test_ccim_matches_the_formulas_by_hand(attention: str) -> None:
    m = _small(attention)
    lam, g, do_x = _by_hand(attention)
    h = torch.tensor([H])
    with torch.no_grad():
        assert m.weights(h)[0].tolist() == pytest.approx(lam, abs=1e-6)
        assert m.expected_confounder(h)[0].tolist() == pytest.approx(g, abs=1e-6)
        assert m(h)[0].tolist() == pytest.approx(do_x, abs=1e-6)  # residual body zeroed


@pytest.mark.parametrize("attention", ["dot", "additive"])
@pytest.mark.parametrize("batch", [1, 64])
def test_ccim_shapes_and_fixed_dictionary(attention: str, batch: int) -> None:
    torch.manual_seed(0)
    d = ConfounderDictionary(torch.randn(16, 24), torch.full((16,), 1 / 16))
    m = CCIM(40, d, attention=attention)
    m.train(batch > 1)  # batch norm trains on 2+ samples
    out = m(torch.randn(batch, 40))
    assert out.shape == (batch, 128) and m.out_features == 128
    assert m.weights(torch.randn(batch, 40)).sum(-1).allclose(torch.ones(batch))
    names = {n for n, _ in m.named_parameters()}
    assert "confounders" not in names and "prior" not in names
    assert {"confounders", "prior"} <= set(m.state_dict())
    out.sum().backward()
    assert m.query.weight.grad is not None and m.w_g.grad is not None


def test_dictionary_round_trip_and_width_check(tmp_path: Path) -> None:
    d = ConfounderDictionary(
        torch.randn(5, 8),
        torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2]),
        {"backbone": "resnet18", "n_clusters": 5},
    )
    path = d.save(tmp_path / "dict.safetensors")
    back = ConfounderDictionary.load(path, expected_dim=8)
    assert torch.equal(back.centres, d.centres) and torch.equal(back.prior, d.prior)
    assert back.meta == {"backbone": "resnet18", "n_clusters": 5}
    assert [p.name for p in tmp_path.iterdir()] == ["dict.safetensors"]  # no temporaries
    with pytest.raises(DeconfoundError, match="width is 8 but the model expects 2048"):
        ConfounderDictionary.load(path, expected_dim=2048)
    m = CCIM(4, ConfounderDictionary(torch.randn(5, 6), torch.full((5,), 0.2)))
    with pytest.raises(DeconfoundError, match=r"shape \(5, 8\) does not fit this CCIM"):
        m.set_dictionary(back)


def test_bad_dictionaries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DeconfoundError, match="prior must be non-negative and sum to 1"):
        ConfounderDictionary(torch.randn(3, 2), torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(DeconfoundError, match="prior has shape"):
        ConfounderDictionary(torch.randn(3, 2), torch.tensor([1.0]))
    with pytest.raises(DeconfoundError, match="not found"):
        ConfounderDictionary.load(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(DeconfoundError, match="junk.safetensors: not a safetensors dictionary"):
        ConfounderDictionary.load(tmp_path / "junk.safetensors")


def test_a_ccim_model_needs_a_dictionary() -> None:
    with pytest.raises(ConfigError, match="needs model.dictionary=PATH"):
        create_model(ModelConfig(args={"backbone": "small_cnn"}, intervention="ccim_dot"), 7)


@pytest.mark.parametrize("intervention", ["ccim_dot", "ccim_add"])
def test_emotnet_plus_ccim_trains_and_restores_without_the_dictionary_file(
    intervention: str, tiny_root: Path, tmp_path: Path
) -> None:
    path = ConfounderDictionary(torch.randn(14, 32), torch.full((14,), 1 / 14)).save(
        tmp_path / "d.safetensors"
    )
    cfg = load_config(
        "emotnet_synthetic",
        [
            *run_overrides(tiny_root, tmp_path, epochs=1),
            f"model.intervention={intervention}",
            f"model.dictionary={path}",
            "model.intervention_args={proj_dim: 64}",
        ],
    )
    result = train(cfg)
    path.unlink()  # the checkpoint carries its dictionary
    module = load_module(result.best_checkpoint)
    assert isinstance(module.model.intervention, CCIM)
    assert module.model.intervention.attention == intervention.removeprefix("ccim_").replace(
        "add", "additive"
    )
    assert module.model.head.in_features == 128
    assert 0 <= evaluate(module, ["test_anti"])["test_anti"]["accuracy"] <= 1
