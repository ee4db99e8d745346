"""Search-space YAML: schema, errors with file:line and key, define-by-run sampling, and the Optuna state rules."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from isp_search.cli import main
from isp_search.configio import ConfigError
from isp_search.search.searcher import decide_state
from isp_search.search.sampling import suggest
from isp_search.search.space_file import load_space

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

SPACE = """\
name: t
base:
  config: base.yaml
  overrides: {train.steps: 3}
space:
  optim.d_color_lr: {type: float, low: 1e-6, high: 1e-4, log: true}
  optim.d_color_every: {type: int, low: 1, high: 20, step: 1}
  optim.beta1: {type: categorical, choices: [0.0, 0.5]}
  optim.d_texture_lr: {type: float, low: 1e-6, high: 1e-4, log: true, when: {optim.beta1: 0.5}}
objectives:
  - {metric: lpips}
  - {metric: psnr, direction: max}
search: {sampler: nsga2, seed: 3, num_samples: 4, max_concurrent: 2,
         points_to_evaluate: [{optim.d_color_lr: 1e-5, optim.beta1: 0.5}]}
scheduler: {type: asha, grace_period: 2, reduction_factor: 2}
resources: {cpu: 2, gpu: 0.5}
storage: {path: runs/search}
export: {top_k: 2, formats: [onnx, tflite], gate_size: [64, 64]}
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    (tmp_path / "base.yaml").write_text("{}\n")
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_to_space_and_fixed_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = load_space(write(tmp_path, SPACE))
    assert space.base.config == str(tmp_path / "base.yaml")  # relative to the YAML, made absolute
    assert space.storage.path == str(tmp_path / "runs" / "search")
    assert space.metric_names == ["lpips", "psnr"] and space.modes == ["min", "max"]  # lpips: declared direction
    assert space.resources.gpu == 0.5 and space.search.sampler == "nsga2" and space.scheduler.reduction_factor == 2
    assert space.export.gate_size == (64, 64)
    fixed = {"optim.d_color_lr": 2e-5, "optim.d_color_every": 7, "optim.beta1": 0.5, "optim.d_texture_lr": 3e-6}
    assert suggest(optuna.trial.FixedTrial(fixed), space) == fixed
    # the conditional parameter is not sampled when its condition fails
    off = {"optim.d_color_lr": 2e-5, "optim.d_color_every": 7, "optim.beta1": 0.0}
    assert suggest(optuna.trial.FixedTrial(off), space) == off


def test_define_by_run_in_a_real_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = load_space(write(tmp_path, SPACE))
    study = optuna.create_study(directions=[m + "imize" for m in space.modes], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        t = study.ask()
        v = suggest(t, space)
        assert 1e-6 <= v["optim.d_color_lr"] <= 1e-4 and 1 <= v["optim.d_color_every"] <= 20
        assert ("optim.d_texture_lr" in v) == (v["optim.beta1"] == 0.5)
        study.tell(t, [0.1, 20.0])
    assert len(study.best_trials) >= 1


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = load_space(write(tmp_path, "base: {config: base.yaml}\nspace:\n  a.b: {type: int, low: 0, high: 3}\n"))
    assert [(o.metric, o.direction) for o in space.objectives] == [("lpips", "min"), ("psnr", "max")]
    assert space.name == "space" and space.scheduler.type == "moasha" and space.scheduler.metric == "score"


@pytest.mark.parametrize(
    "patch, expected",
    [
        (("storage: {path: runs/search}", "storage: {path: runs/search, bucket: x}"),
         r"space.yaml:17: unknown key storage.bucket; valid: path, optuna"),
        (("name: t", "name: t\nsearhc: {}"), r"space.yaml:2: unknown key searhc \(did you mean 'search'\?\)"),
        (("log: true}\n  optim.d_color_every", "log: true, lo: 1}\n  optim.d_color_every"),
         r"space.yaml:6: unknown key space.optim.d_color_lr.lo"),
        (("sampler: nsga2", "sampler: tpee"), r"space.yaml:13: search.sampler: expected one of .* \(did you mean 'tpe'\?\)"),
        (("low: 1, high: 20", "low: 30, high: 20"), r"space.yaml:7: space.optim.d_color_every.high: expected low <= high"),
        (("choices: [0.0, 0.5]", "choices: []"), r"space.yaml:8: space.optim.beta1.choices: categorical needs"),
        (("when: {optim.beta1: 0.5}", "when: {optim.beta2: 0.5}"), r"space.yaml:9: .*condition on 'optim.beta2'"),
        (("when: {optim.beta1: 0.5}", "when: {optim.beta1: 0.7}"), r"space.yaml:9: .*0.7 is not among the choices"),
        (("gpu: 0.5", "gpu: -1"), r"space.yaml:16: resources.gpu: expected a number >= 0, got -1"),
        (("num_samples: 4", "num_samples: four"), r"space.yaml:13: search.num_samples: expected int, got 'four'"),
        (("metric: psnr, direction: max", "metric: psnr, direction: up"),
         r"space.yaml:10: objectives\[1\].direction: expected 'min' or 'max', got 'up'"),
        (("{metric: lpips}", "{metric: lpipz}"), r"space.yaml:10: objectives\[0\].metric: .*lpipz"),
        (("optim.beta1: 0.5}]", "optim.beta: 0.5}]"), r"space.yaml:14: search.points_to_evaluate\[0\]: unknown parameter 'optim.beta'"),
        (("formats: [onnx, tflite]", "formats: [onnx, coreml]"), r"space.yaml:18: export.formats: expected formats"),
        (("config: base.yaml", "config: nothere.yaml"), r"space.yaml:3: base.config: no such file"),
        (("type: float, low: 1e-6", "type: floaty, low: 1e-6"), r"space.yaml:6: space.optim.d_color_lr.type"),
        (("log: true}\n  optim.d_color_every", "log: true, step: 0.1}\n  optim.d_color_every"),
         r"space.yaml:6: space.optim.d_color_lr.step: 'step' and 'log: true'"),
        (("  overrides: {train.steps: 3}", "  overrides: {train.steps: 3\n"), r"space.yaml:\d+: malformed YAML"),
    ],
)
def test_bad_yaml_is_one_line_with_key_and_line(tmp_path, monkeypatch, patch, expected):
    monkeypatch.chdir(tmp_path)
    assert patch[0] in SPACE
    p = write(tmp_path, SPACE.replace(patch[0], patch[1]))
    with pytest.raises(ConfigError, match=expected) as e:
        load_space(p)
    assert "\n" not in str(e.value)


def test_cli_reports_bad_space_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, SPACE.replace("sampler: nsga2", "sampler: grid"))
    assert main(["search", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("isp-search: error: ") and "search.sampler" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_spaces_load_and_match_the_trainer_config(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    from isp_search.search.context import base_train_config, check_space_keys

    space = load_space(path)
    assert space.search.points_to_evaluate, "the paper's defaults are evaluated first"
    cfg = base_train_config(space)  # every base config loads
    check_space_keys(space, cfg)  # every tuned key exists in the trainer config
    for point in space.search.points_to_evaluate:  # the defaults are inside the space
        suggest(optuna.trial.FixedTrial(dict(point)), space)


def test_shipped_spaces_exist():
    names = {p.name for p in SHIPPED}
    assert {"efficient_isp_unpaired_mai2022.yaml", "robust_isp_unpaired_mai2022.yaml",
            "rmfa_tiny_unpaired_mai2022.yaml", "efficient_isp_unpaired_zrr.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize(
    "result, error, state, reason",
    [
        ({"final": 1, "trial_status": "completed", "lpips": 0.2, "psnr": 21.0}, False, TrialState.COMPLETE, ""),
        ({"lpips": 0.2, "psnr": 21.0, "training_iteration": 2}, False, TrialState.PRUNED, "stopped early"),
        ({"final": 1, "trial_status": "diverged", "fail_reason": "non-finite loss at step 7"}, False,
         TrialState.FAIL, "diverged: non-finite loss at step 7"),
        ({"final": 1, "trial_status": "completed", "lpips": math.nan, "psnr": 21.0}, False, TrialState.FAIL,
         "non-finite objective lpips"),
        ({"final": 1, "trial_status": "completed", "psnr": 21.0}, False, TrialState.FAIL, "non-finite objective lpips"),
        ({"lpips": 0.2, "psnr": 21.0}, True, TrialState.FAIL, "Ray error, no exception reported"),
        ({"fail_reason": "FileNotFoundError: /data/x"}, True, TrialState.FAIL, "FileNotFoundError: /data/x"),
        ({"trial_status": "error", "fail_reason": "cfg.yaml: data.root: no such folder"}, False, TrialState.FAIL,
         "cfg.yaml: data.root: no such folder"),
        (None, False, TrialState.PRUNED, "stopped early"),
    ],
)
def test_decide_state(result, error, state, reason):
    s, values, why = decide_state(result, ["lpips", "psnr"], error)
    assert s == state and reason in why
    assert (values is not None) == (state == TrialState.COMPLETE)


def test_searcher_on_an_rdb_study_names_its_metrics(tmp_path, monkeypatch):
    """storage.optuna as an RDB URL: the study is created there with the objectives as metric names, and the
    searcher survives the pickling Ray's experiment snapshots do; postgresql:// has its driver installed."""
    import pickle

    import sqlalchemy

    from isp_search.search.searcher import make_searcher

    monkeypatch.chdir(tmp_path)
    space = load_space(write(tmp_path, SPACE))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(space, "s1", url, "e1")
    assert searcher.suggest("ray1")["optim.beta1"] in (0.0, 0.5)
    assert pickle.loads(pickle.dumps(searcher)).study.study_name == "s1"
    study = optuna.load_study(study_name="s1", storage=url)
    assert study.metric_names == ["lpips", "psnr"]
    (t,) = study.trials
    assert t.user_attrs["ray_trial_id"] == "ray1" and t.params["optim.d_color_lr"] == 1e-5  # the enqueued point
    assert sqlalchemy.create_engine("postgresql://u@127.0.0.1:1/db").dialect.driver == "psycopg"


def test_journal_mirror_push_and_pull(tmp_path):
    """The object-store copy of a local journal (file:// stands in for s3://): pushed, then restored on a machine
    whose copy is missing or shorter, never over a longer local one."""
    from isp_search.search import journal

    uri = journal.mirror_uri(f"file://{tmp_path / 'bucket'}", "exp1", str(tmp_path / "a.journal"))
    assert uri == f"file://{tmp_path / 'bucket'}/exp1/optuna.journal"
    assert journal.mirror_uri(str(tmp_path), "exp1", str(tmp_path / "a.journal")) is None  # on shared disk already
    (tmp_path / "a.journal").write_text("one\ntwo\n")
    assert journal.push(str(tmp_path / "a.journal"), uri)
    other = tmp_path / "elsewhere" / "a.journal"
    assert journal.pull(str(other), uri) and other.read_text() == "one\ntwo\n"
    other.write_text("one\ntwo\nthree\n")  # the local copy has more: kept
    assert not journal.pull(str(other), uri) and other.read_text().endswith("three\n")


def test_searcher_takes_over_a_trial_asked_before_a_kill(tmp_path, monkeypatch):
    """The driver died after Optuna asked a trial but before Ray saved any state: the searcher made again for the
    same study hands that trial (its parameters) to the next Ray trial instead of asking a new one, and does not
    enqueue the points to evaluate twice."""
    from isp_search.search.searcher import make_searcher

    monkeypatch.chdir(tmp_path)
    space = load_space(write(tmp_path, SPACE))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = make_searcher(space, "s1", url, "e1").suggest("ray-a")
    again = make_searcher(space, "s1", url, "e1").suggest("ray-b")
    (t,) = optuna.load_study(study_name="s1", storage=url).trials
    assert again == first and t.state == TrialState.RUNNING and t.user_attrs["ray_trial_id"] == "ray-b"
