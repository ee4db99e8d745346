"""Preflight on the driver: each problem of a search space is one line naming the file, the key and the fix, and
every problem is listed at once (the CLI refusal against a real Ray head is in tests/test_search.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from isp_search.search.context import base_train_config
from isp_search.search.preflight import PreflightError, check, point_value_problem, problems
from isp_search.search.space import Param
from isp_search.search.space_file import load_space

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CFG = ROOT / "configs" / "smoke_unpaired.yaml"

SPACE = """\
name: pf
base:
  config: {cfg}
  overrides: {{data.root: {root}, data.synthetic: false, train.steps: 4, train.eval_interval: 2}}
space:
  optim.d_color_lr: {{type: float, low: 1.0e-6, high: 1.0e-4, log: true}}
  data.demosaicer: {{type: categorical, choices: [menon2007, opencv_bilinear]}}
search:
  num_samples: 2
  points_to_evaluate:
    - {{optim.d_color_lr: 1.0e-5, data.demosaicer: menon2007}}
scheduler: {{type: asha, grace_period: 1}}
resources: {{cpu: 1}}
storage: {{path: {tmp}/exp}}
export: {{results: {tmp}/results}}
"""

# (what is wrong, edit of the valid space, regex the one problem line must match)
CASES = {
    "missing data root": (("data.root: {root}", "data.root: {tmp}/nowhere"),
                          r"space\.yaml:4: base\.overrides\.data\.root: no such folder .*/nowhere; fix: "),
    "bad second choice": (("[menon2007, opencv_bilinear]", "[menon2007, menonn2007]"),
                          (r"space\.yaml:7: space\.data\.demosaicer: choice 2 \('menonn2007'\) sets data\.demosaicer: "
                           r"unknown demosaicer 'menonn2007'.*; fix: ")),
    "point outside its choices": (("data.demosaicer: menon2007}", "data.demosaicer: bilinear}"),
                                  (r"space\.yaml:10: search\.points_to_evaluate\[0\]\.data\.demosaicer: "
                                   r"'bilinear' is not among the choices \['menon2007', '\w+'\]; fix: ")),
    "out-of-range float in a point": (("{optim.d_color_lr: 1.0e-5,", "{optim.d_color_lr: 0.5,"),
                                      (r"space\.yaml:10: search\.points_to_evaluate\[0\]\.optim\.d_color_lr: 0\.5 "
                                       r"is outside \[1e-06, 0\.0001\]; fix: ")),
    "init_from without a checkpoint": (("data.synthetic: false", "data.synthetic: false, model.init_from: {tmp}"),
                                       (r"space\.yaml:4: base\.overrides\.model\.init_from: .* a run folder needs "
                                        r"checkpoints/best\.pt or checkpoints/last\.pt; found neither; fix: ")),
    "max_t too small": (("grace_period: 1}", "grace_period: 1, max_t: 2}"),
                        # with init_from (another case) the start is evaluated too: 3 evaluations, fix max_t: 4
                        r"space\.yaml:12: scheduler\.max_t: 2 is at or below the [23] evaluations of each trial: .*; "
                        r"fix: max_t: [34]"),
}


def make(tmp_path: Path, root: Path, edits: list[tuple[str, str]] = ()) -> Path:
    text = SPACE.format(cfg=SMOKE_CFG, root=root, tmp=tmp_path)
    for old, new in edits:
        old, new = (x.replace("{root}", str(root)).replace("{tmp}", str(tmp_path)) for x in (old, new))
        assert old in text, old
        text = text.replace(old, new)
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def found(path: Path) -> list[str]:
    space = load_space(path)
    return problems(space, base_train_config(space))


def test_a_valid_space_passes(tmp_path, synth_root):
    assert found(make(tmp_path, synth_root)) == []


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_each_problem_is_one_line_naming_file_key_and_fix(tmp_path, synth_root, case):
    edit, pattern = CASES[case]
    lines = found(make(tmp_path, synth_root, [edit]))
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines
    assert "\n" not in lines[0]


def test_missing_pretrained_files_each_one_line(tmp_path, synth_root, monkeypatch):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    for var in ("ISP_SEARCH_WEIGHTS", "TORCH_HOME", "HF_HOME"):
        monkeypatch.setenv(var, str(empty))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    lines = found(make(tmp_path, synth_root, [("data.synthetic: false",
                                               "data.synthetic: false, backbone_weights: pretrained")]))
    # the smoke config's terms: VGG-19 content, ViT colour D, AlexNet texture D (+ LPIPS heads, shipped in lpips)
    names = sorted(re.search(r"pretrained weights '(\w+)'", line).group(1) for line in lines)
    assert names == ["alexnet", "vgg19", "vit_b16"], lines
    assert all("backbone_weights: " in line and "fix: " in line and "space.yaml:4" in line for line in lines)


def test_every_problem_listed_at_once(tmp_path, synth_root):
    path = make(tmp_path, synth_root, [edit for edit, _ in CASES.values()])
    space = load_space(path)
    with pytest.raises(PreflightError) as e:
        check(space, base_train_config(space))
    lines = e.value.lines
    assert len(lines) == len(CASES), lines
    for (_, pattern), line in zip(CASES.values(), sorted(lines, key=lambda s: [*CASES].index(_case_of(s)))):
        assert re.search(pattern, line), (pattern, line)
    assert str(e.value).splitlines()[0] == f"preflight: {len(CASES)} problem(s), nothing was started:"


def _case_of(line: str) -> str:
    return next(c for c, (_, pattern) in CASES.items() if re.search(pattern, line))


@pytest.mark.parametrize("param, value, ok", [
    (Param("categorical", choices=(0.0, 0.5)), 0.5, True),
    (Param("categorical", choices=(0, 1)), True, False),  # True is not the choice 1
    (Param("int", low=1, high=20), 3, True),
    (Param("int", low=1, high=20), 2.5, False),
    (Param("float", low=0.0, high=1.0, step=0.25), 0.5, True),
    (Param("float", low=0.0, high=1.0, step=0.25), 0.3, False),  # off the step grid
    (Param("float", low=0.0, high=1.0), "0.5", False),
])
def test_point_values(param, value, ok):
    assert (point_value_problem(param, value) is None) == ok


def test_default_max_t_refused_when_a_choice_evaluates_more(tmp_path, synth_root):
    """ASHA's default max_t comes from the base config (2 evaluations + 1): a searched train.steps that gives a
    trial 4 evaluations would have every such trial stopped before its closing report."""
    searched_steps = "  train.steps: {type: int, low: 4, high: 8}\n  data.demosaicer:"
    lines = found(make(tmp_path, synth_root, [("  data.demosaicer:", searched_steps)]))
    assert len(lines) == 1 and re.search(r"scheduler\.max_t: the default 3 \(base evaluations \+ 1\) is at or below "
                                         r"the 4 evaluations of space\.train\.steps high \(8\).*fix: max_t: 5", lines[0])
