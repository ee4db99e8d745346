"""Experiment records: a name already taken under the storage path is refused without --resume (nothing written),
and found again with it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from isp_search.errors import UserError
from isp_search.search.experiment import find_experiment, new_experiment, write_meta
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
