"""When each study stage ran: ``<exp>/stages.json`` gets ``{stage, start, end, seconds}`` for every stage a run
of the study went through (a resumed study appends its own), so where a study's wall clock went can be read back
(``isp-search study-value``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from isp_search.search.experiment import read_json, write_json

RECORD = "stages.json"


@contextmanager
def timed(exp_uri: str, stage: str) -> Iterator[None]:
    """Record ``stage``'s start and end under ``exp_uri`` once it finishes (an interrupted stage is not recorded)."""
    start = time.time()
    yield
    end = time.time()
    doc = read_json(f"{exp_uri}/{RECORD}") or {"stages": []}
    doc["stages"].append({"stage": stage, "start": round(start, 3), "end": round(end, 3),
                          "seconds": round(end - start, 3)})
    write_json(f"{exp_uri}/{RECORD}", doc)
