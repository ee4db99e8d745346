"""The code identity: the same source hash from a copy of the package without .git (as ``ray job submit`` runs
it), the git SHA from the checkout or ``$ISP_SEARCH_GIT_SHA``; a changed source file changes the hash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from isp_search.provenance import code_identity

REPO = Path(__file__).resolve().parents[1]
PROBE = "import json; from isp_search.provenance import code_identity; print(json.dumps(code_identity()))"


def _identity_of(root: Path, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root), **env})
    return json.loads(out.stdout)


def test_a_copy_without_git_has_the_same_code_identity(tmp_path):
    here = code_identity()
    assert here["git_sha"] and len(here["code_sha256"]) == 64
    copy = tmp_path / "job"  # what ray job submit unpacks: the working tree without .git
    shutil.copytree(REPO / "isp_search", copy / "isp_search", ignore=shutil.ignore_patterns("__pycache__"))
    there = _identity_of(copy, GIT_CEILING_DIRECTORIES=str(tmp_path))
    assert there == {"git_sha": None, "code_sha256": here["code_sha256"]}
    assert _identity_of(copy, GIT_CEILING_DIRECTORIES=str(tmp_path), ISP_SEARCH_GIT_SHA=here["git_sha"]) == here
    (copy / "isp_search" / "provenance.py").write_text((copy / "isp_search" / "provenance.py").read_text() + "\n#\n")
    assert _identity_of(copy, GIT_CEILING_DIRECTORIES=str(tmp_path))["code_sha256"] != here["code_sha256"]
