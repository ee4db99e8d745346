"""Experiment records: a name already taken under the storage path is refused without --resume (nothing written),
and found again with it; --resume of a started search whose Optuna journal is gone is refused in one line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from isp_search.errors import UserError
from isp_search.search.experiment import find_experiment, new_experiment, write_meta
from isp_search.search.optuna_storage import make_storage
from isp_search.search.space_file import load_space

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def test_a_taken_name_is_refused_without_resume_and_found_with_it(tmp_path):
    space = load_space(SMOKE)
    space = replace(space, storage=replace(space.storage, path=str(tmp_path)))
    exp = new_experiment(space, "mine")
    write_meta(exp, space)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as e:
        new_experiment(space, "mine")
    msg = str(e.value)
    assert "\n" not in msg and "--resume" in msg and "--name" in msg and "'mine'" in msg
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    again = find_experiment(space, "mine")
    assert again.study_name == exp.study_name and again.optuna_storage == exp.optuna_storage
    assert new_experiment(space, "other").name == "other"


def test_resume_with_its_journal_gone_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A started search (Ray's ``tuner.pkl`` is there) whose Optuna journal was deleted: ``--resume`` is refused
    with one line naming the journal and what to do, before Ray starts. Cut off before its first trial (no
    ``tuner.pkl``), a missing journal is normal and the experiment is found; a journal found in the experiment
    folder while ``isp_search.json`` names another path (the folder was moved) is pointed out."""
    from clirun import run_cli

    space = load_space(SMOKE)
    space = replace(space, storage=replace(space.storage, path=str(tmp_path)))
    exp = new_experiment(space, "gone")
    write_meta(exp, space)
    assert find_experiment(space, "gone").optuna_storage == exp.optuna_storage  # not started yet: no journal
    make_storage(exp.optuna_storage)  # the journal, as the search stage creates it
    (Path(exp.uri) / "tuner.pkl").write_bytes(b"ray's tuner state")  # as Ray writes it when the search starts
    find_experiment(space, "gone")
    Path(exp.optuna_storage).unlink()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    code, out, err = run_cli(capsys, "search", SMOKE, "--name", "gone", "--resume", "--storage", tmp_path)
    assert code == 2 and "Traceback" not in out + err, out + err
    assert err.count("\n") == 1 and err.startswith(f"isp-search: error: --resume: {exp.optuna_storage}: the Optuna "
                                                   "journal of experiment 'gone' is missing"), err
    assert "without --resume under a new --name" in err and "moved" in err and "(nothing was started)" in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    moved = tmp_path / "elsewhere" / "optuna.journal"
    moved.parent.mkdir()
    (Path(exp.uri) / "isp_search.json").write_text(
        (Path(exp.uri) / "isp_search.json").read_text().replace(exp.optuna_storage, str(moved)))
    make_storage(exp.optuna_storage)  # the journal in the experiment folder, the record naming another path
    with pytest.raises(UserError) as e:
        find_experiment(space, "gone")
    assert f"a journal is at {exp.optuna_storage}: if the experiment folder was moved" in str(e.value), e.value
