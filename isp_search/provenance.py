"""The code identity every run folder, export and leaderboard row records (STYLE rule 10).

``git_sha``: the commit of the checkout, or ``$ISP_SEARCH_GIT_SHA`` where there is no ``.git`` (a job submitted
with ``ray job submit`` runs a copy of the working tree without it: pass the SHA in its runtime env, see
``cluster/README.md``). ``code_sha256``: a hash of the package's own source files (names and bytes), the same for
the same code wherever it runs, with or without git.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
GIT_SHA_ENV = "ISP_SEARCH_GIT_SHA"


@functools.cache
def git_sha() -> str | None:
    """The commit of the isp-search checkout, else ``$ISP_SEARCH_GIT_SHA``, else None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE, capture_output=True, text=True, timeout=10,
                             check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get(GIT_SHA_ENV) or None


@functools.cache
def code_sha256() -> str:
    """sha256 over the package's ``.py`` files (relative names and contents, in name order)."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*.py")):
        h.update(p.relative_to(PACKAGE).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def code_identity() -> dict[str, str | None]:
    return {"git_sha": git_sha(), "code_sha256": code_sha256()}
