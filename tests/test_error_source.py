"""An error names where its value came from: the space file's line for ``base.overrides``, the flag for
``--set KEY=VALUE``, and the user's own path (not the job's temporary copy) under ``ray job submit``."""

from __future__ import annotations

from pathlib import Path

import pytest

from isp_search.cli import main
from isp_search.commands.search import with_overrides
from isp_search.errors import as_the_user_knows_it
from isp_search.search.context import base_train_config
from isp_search.search.preflight import problems
from isp_search.search.space_file import load_space

SMOKE_CFG = Path(__file__).resolve().parents[1] / "configs" / "smoke_unpaired.yaml"
SPACE = f"""\
name: src
base:
  config: {SMOKE_CFG}
  overrides:
    train.steps: 4
    train.eval_intervall: 2
space:
  optim.d_color_lr: {{type: float, low: 1.0e-6, high: 1.0e-4, log: true}}
"""


def _run(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.splitlines()


def test_a_typo_in_base_overrides_names_file_line_and_key(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    code, err = _run(capsys, "search", space, "--storage", tmp_path / "exp")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"isp-search: error: {space}:6: base.overrides.train.eval_intervall: ")
    assert "did you mean 'eval_interval'" in err[0]
    assert not (tmp_path / "exp").exists()  # refused before anything was written


def test_a_set_flag_error_names_the_flag(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("eval_intervall", "eval_interval"))
    code, err = _run(capsys, "search", space, "--storage", tmp_path / "exp", "--set", "train.stepz=3")
    assert code == 2 and len(err) == 1 and err[0].startswith("isp-search: error: --set train.stepz=3: "), err
    assert "did you mean 'steps'" in err[0]


def test_preflight_names_the_set_flag_for_a_value_it_set(tmp_path, synth_root):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("eval_intervall", "eval_interval").replace(
        "    train.steps: 4\n", f"    train.steps: 4\n    data.synthetic: false\n    data.root: {synth_root}\n"))
    s = with_overrides(load_space(space), [f"data.root={tmp_path / 'nowhere'}"])
    (line,) = problems(s, base_train_config(s))
    assert line.startswith(f"--set data.root={tmp_path / 'nowhere'}: no such folder"), line
    # the same bad value written in the file names the file and line instead
    space.write_text(space.read_text().replace(str(synth_root), str(tmp_path / "nowhere")))
    s = load_space(space)
    (line,) = problems(s, base_train_config(s))
    assert line.startswith(f"{space}:7: base.overrides.data.root: no such folder"), line


@pytest.mark.parametrize("shown, expected", [
    (("/tmp/ray/session_2026-12-06_10-00-00_1_2/runtime_resources/working_dir_files/_ray_pkg_5f2a9c0d1e3b4a69/"
      "search_spaces/x.yaml:5: base.overrides.data.root: no such folder /nope"),
     "search_spaces/x.yaml:5: base.overrides.data.root: no such folder /nope"),
    ("/home/me/isp/search_spaces/x.yaml:5: fine as it is", "/home/me/isp/search_spaces/x.yaml:5: fine as it is"),
])
def test_paths_in_a_jobs_copy_of_the_working_dir_are_shown_as_the_user_typed_them(shown, expected):
    assert as_the_user_knows_it(shown) == expected


def test_storage_the_driver_cannot_write_is_one_preflight_line(tmp_path, synth_root):
    """/sys is read-only here even for root (a chmod'ed folder would not stop root): one line naming the path."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("eval_intervall", "eval_interval").replace(
        "    train.steps: 4\n", f"    train.steps: 4\n    data.synthetic: false\n    data.root: {synth_root}\n")
        + "storage: {path: /sys/isp-search-nowhere/exp}\n")
    s = load_space(space)
    (line,) = problems(s, base_train_config(s))
    assert line.startswith(f"{space}:11: storage.path: cannot write to /sys/isp-search-nowhere/exp"), line
    assert "fix: " in line and "\n" not in line
    ok = load_space(space.write_text(space.read_text().replace("/sys/isp-search-nowhere", str(tmp_path))) and space)
    assert problems(ok, base_train_config(ok)) == [] and not list(tmp_path.glob("exp/.isp-search-write-check-*"))
