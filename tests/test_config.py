"""Configs: bundled ones parse, overrides are typed, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from deconfound.config import CONFIG_DIR, Config, load_config
from deconfound.errors import ConfigError
from deconfound.models import BASE_MODELS


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_config_parses_and_names_a_known_model(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.name in BASE_MODELS
    assert cfg.to_dict()["model"]["name"] == cfg.model.name


def test_the_repo_configs_folder_is_the_bundled_one() -> None:
    repo_configs = Path(__file__).parents[1] / "configs"
    assert repo_configs.resolve() == CONFIG_DIR.resolve()


def test_overrides_are_parsed_as_yaml_and_typed() -> None:
    cfg = load_config(
        "emotnet_synthetic",
        [
            "trainer.max_epochs=3",
            "optim.lr=1",
            "data.view_sizes={body: 8}",
            "model.args.dropout=0.1",
            "name=x",
        ],
    )
    assert cfg.trainer.max_epochs == 3
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.data.view_sizes == {"body": 8}
    assert cfg.model.args["dropout"] == 0.1 and cfg.name == "x"
    assert load_config(None) == Config()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=3", "unknown key 'trainer.max_epoch'"),
        ("trainer.max_epochs=three", "'trainer.max_epochs' must be int"),
        ("trainer.max_epochs=true", "'trainer.max_epochs' must be int"),
        ("data=3", "'data' must be a mapping"),
        ("max_epochs", "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("emotnet_synthetic", [override])


def test_bad_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(bad)
    with pytest.raises(
        ConfigError, match="not found; give a YAML path or one of: .*emotnet_synthetic"
    ):
        load_config(tmp_path / "nope.yaml")


def test_a_config_extends_another_section_by_section(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "name: base\ndata: {batch_size: 8, view_sizes: {body: 16}}\n"
        "model: {name: emotnet, args: {backbone: small_cnn, fusion_dim: 32}}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nname: child\ndata: {view_sizes: {face: 8}}\n"
        "model: {name: caernet, args: {backbone: small_cnn}}\n"
    )
    cfg = load_config(tmp_path / "child.yaml", ["data.batch_size=4"])
    assert cfg.name == "child" and cfg.data.batch_size == 4
    assert cfg.data.view_sizes == {"body": 16, "face": 8}  # mappings merge
    assert cfg.model.name == "caernet" and cfg.model.args == {
        "backbone": "small_cnn"
    }  # args: replaced
    bundled = load_config("caer_s_caernet_ccim")  # a bundled chain: caer_s -> caernet -> ccim
    assert (bundled.data.dataset, bundled.model.name, bundled.model.intervention) == (
        "caer_s", "caernet", "ccim_dot",
    )  # fmt: skip


def test_extends_cycles_and_unknown_parents_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extend each other in a cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match="config 'nowhere' not found"):
        load_config(tmp_path / "c.yaml")
