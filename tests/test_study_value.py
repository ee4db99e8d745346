"""`isp-search study-value` on studies of different lengths: the hypervolume table shows each study only up to the
trials it ran (a finished study read with tests/test_search.py's real search)."""

import math

from isp_search.diagnostics.scheduler_sim import hypervolume
from isp_search.diagnostics.study_value import StudyValue, hypervolume_lines

START = {"val": {"lpips": 0.06, "psnr": 17.0}}


def study(name: str, sampler: str, front: list[tuple[int, float, float]], trials: int) -> StudyValue:
    return StudyValue(name, sampler, {"COMPLETE": trials}, START, [], front, {}, 2)


def test_a_shorter_study_shows_no_hypervolume_past_its_last_trial():
    long = study("synth-tpe", "tpe", [(0, 0.05, 17.5), (9, 0.03, 19.0), (20, 0.02, 20.0)], trials=24)
    short = study("synth-random", "random", [(3, 0.04, 18.0), (10, 0.035, 18.5)], trials=12)
    lines = hypervolume_lines([long, short], every=8)
    rows = {int(ln.split()[0]): ln.split() for ln in lines[2:]}
    assert sorted(rows) == [8, 12, 16, 24]  # every 8, and where each study ends
    ref = (0.06, 17.0)
    top = hypervolume([(0.05, 17.5), (0.03, 19.0), (0.02, 20.0)], ref)
    assert float(rows[24][1]) == round(top, 5) and rows[24][2:4] == ["100.0", "%"]
    assert float(rows[12][4]) == round(hypervolume([(0.04, 18.0), (0.035, 18.5)], ref), 5)
    assert rows[16][-1] == "—" and rows[24][-1] == "—"  # the random study ran 12 trials: nothing after them
    assert math.isclose(float(rows[8][1]), hypervolume([(0.05, 17.5)], ref), abs_tol=1e-5)
