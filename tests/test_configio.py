"""Typed YAML configs: values are checked at load and errors name the file, line and dotted key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from isp_search.configio import ConfigError, build, load_yaml, parse_override, parse_yaml, set_dotted, to_dict
from isp_search.registry import Registry, UnknownNameError


@dataclass(frozen=True)
class Optim:
    g_lr: float = field(default=5e-4, metadata={"check": lambda v: v > 0, "valid": "float > 0"})
    betas: tuple[float, float] = (0.5, 0.9)


@dataclass(frozen=True)
class Cfg:
    mode: Literal["pretrain", "unpaired"] = "pretrain"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


def test_build_reads_types_and_nested_sections(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("mode: unpaired\nsteps: 3\noptim:\n  g_lr: 1e-4\n  betas: [0, 0.9]\n")
    data, src = load_yaml(p)
    cfg = build(Cfg, data, src)
    assert cfg == Cfg("unpaired", 3, Optim(1e-4, (0.0, 0.9)))
    assert to_dict(cfg) == {"mode": "unpaired", "steps": 3, "optim": {"g_lr": 1e-4, "betas": [0.0, 0.9]}}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("steps: 1\noptim:\n  g_lr: -1\n", "c.yaml:3: optim.g_lr: expected float > 0, got -1.0"),
        ("steps: 1\noptim:\n  glr: 1\n", "c.yaml:3: unknown key optim.glr (did you mean 'g_lr'?)"),
        ("mode: unpared\n", "c.yaml:1: mode: expected one of ['pretrain', 'unpaired'], got 'unpared'"),
        ("steps: 1.5\n", "c.yaml:1: steps: expected int, got 1.5"),
        ("optim:\n  betas: [0.5]\n", "c.yaml:2: optim.betas: expected 2 values"),
    ],
)
def test_bad_values_name_file_line_and_key(text, expected):
    data, src = parse_yaml(text, "c.yaml")
    with pytest.raises(ConfigError) as e:
        build(Cfg, data, src)
    assert str(e.value).startswith(expected)


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:2: malformed YAML"):
        parse_yaml("a: 1\n b: [\n", "c.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", "c.yaml")


def test_overrides():
    key, value = parse_override("optim.g_lr=1e-3")
    assert (key, value) == ("optim.g_lr", 1e-3)
    d: dict = {}
    set_dotted(d, key, value)
    assert build(Cfg, d).optim.g_lr == 1e-3
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.g_lr")


def test_registry_miss_suggests_close_names():
    reg: Registry[int] = Registry("demosaicer")
    reg.add("menon2007", 1)
    reg.add("malvar2004", 2)
    assert reg.get("menon2007") == 1
    with pytest.raises(UnknownNameError, match=r"unknown demosaicer 'menon2070'; did you mean 'menon2007'\?"):
        reg.get("menon2070")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("menon2007", 3)
