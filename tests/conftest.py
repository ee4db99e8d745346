"""Shared fixtures: a small synthetic data set in the real MAI 2022 layout, built once per session."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Reference caches and the fallback synthetic set go to a per-session folder, never the user's ~/.cache; removed at
# the end of the session when this process made it (25 MB a run: 74 of them had piled up in /tmp).
_OWN_CACHE = None if "ISP_SEARCH_CACHE" in os.environ else tempfile.mkdtemp(prefix="isp-search-test-cache-")
if _OWN_CACHE:
    os.environ["ISP_SEARCH_CACHE"] = _OWN_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from isp_search.data.synth import synthesize

    root = tmp_path_factory.mktemp("synth") / "mai2022"
    synthesize(root, "mai2022", n_train=8, n_val=4, n_test=4, seed=0, size=64)
    return root
