"""The Parquet leaderboard table: schema round trip, atomic and concurrent appends, the MAI score and Pareto front,
an older table read into the schema, and the table's CLI and HTML report."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from clirun import run_cli

from isp_search.export import leaderboard as LB


def _row(i: int, **kw) -> dict:
    base = dict(model_id=f"m{i}", backbone="efficient_isp", mode="unpaired", search_id="s", trial_id=f"t{i}",
                config={"optim": {"d_lr": 1e-5 * (i + 1)}}, params=3060, psnr=20.0 + i, lpips=0.3 - 0.01 * i,
                lpips_weights="random", latency=[{"target": "cpu", "runtime": "litert-xnnpack", "median_ms": 10.0 + i}],
                latency_ms=10.0 + i, latency_target="cpu", artifacts={"tflite": f"/x/{i}.tflite"},
                sha256={"tflite": "0" * 64})
    return base | kw


def test_append_read_round_trip(tmp_path):
    p = tmp_path / "lb.parquet"
    LB.append_rows([_row(0)], p)
    LB.append_rows([_row(1), _row(2)], p)
    df = pd.read_parquet(p)
    assert df["model_id"].tolist() == ["m0", "m1", "m2"]
    assert df["psnr"].tolist() == [20.0, 21.0, 22.0]
    assert df["latency"][1][0]["median_ms"] == 11.0
    assert dict(df["artifacts"][2])["tflite"] == "/x/2.tflite"
    assert LB.read(p).schema.equals(LB.SCHEMA)
    with pytest.raises(ValueError, match="unknown columns"):
        LB.append_rows([{"nope": 1}], p)


def test_mai_score_and_pareto():
    assert LB.mai_score(20.0, 10.0) == 2.0**40 / 10.0
    assert LB.mai_score(20.5, 20.0) == pytest.approx(LB.mai_score(20.0, 10.0))  # +0.5 dB pays for 2x time
    rows = [dict(lpips=0.2, psnr=20, latency_ms=5), dict(lpips=0.1, psnr=22, latency_ms=5),
            dict(lpips=0.1, psnr=21, latency_ms=1), dict(lpips=0.3, psnr=19, latency_ms=9)]
    assert LB.pareto_front(rows, {"lpips": "min", "psnr": "max", "latency_ms": "min"}) == [False, True, True, False]


_WRITER = textwrap.dedent("""
    import sys
    from isp_search.export import leaderboard as LB
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        LB.append_rows([dict(model_id=f"{tag}{i}", psnr=float(i))], path)
""")


def test_concurrent_appends_lose_no_row(tmp_path):
    p = tmp_path / "lb.parquet"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(p), tag, "15"]) for tag in ("a", "b")]
    assert [pr.wait(timeout=120) for pr in procs] == [0, 0]
    ids = pd.read_parquet(p)["model_id"].tolist()
    assert sorted(ids) == sorted([f"a{i}" for i in range(15)] + [f"b{i}" for i in range(15)])


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import pyarrow.parquet as pq
    from isp_search.export import leaderboard as LB
    real = pq.write_table
    def slow(table, where, **kw):  # write half, then stall: the kill lands mid-write
        where.write(b"PAR1" + b"x" * 1000)
        where.flush()
        print("writing", flush=True)
        time.sleep(60)
    pq.write_table = slow
    LB.append_rows([dict(model_id="never")], sys.argv[1])
""")


def test_writer_killed_mid_write_leaves_table_readable(tmp_path):
    p = tmp_path / "lb.parquet"
    LB.append_rows([_row(0), _row(1)], p)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(p)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert pd.read_parquet(p)["model_id"].tolist() == ["m0", "m1"]
    LB.append_rows([_row(2)], p)  # the lock was released with the dead process
    assert len(pd.read_parquet(p)) == 3


def test_leaderboard_class_scores_rows_written_directly(tmp_path):
    board = LB.Leaderboard(tmp_path / "lb.parquet")
    board.append(dict(model_id="a", psnr=20.0, latency_ms=10.0, lpips=0.2, latency_target="adb:R5CW"))
    board.append(dict(model_id="b", psnr=19.0, latency_ms=20.0, lpips=0.3, latency_target="qai-hub:Samsung Galaxy S24"))
    board.append(dict(model_id="c", psnr=25.0, latency_ms=5.0, lpips=0.3, latency_target="cpu", mai_score=1e9))
    board.append(dict(model_id="d", psnr=25.0, latency_ms=5.0, lpips=0.3, latency_target="cpu"))
    table = board.read()
    # the MAI score is defined on a phone GPU: never computed from (or kept for) a CPU time, and labelled
    assert table.column("mai_score").to_pylist() == [2.0**40 / 10.0, 2.0**38 / 20.0, None, None]
    assert table.column("mai_target").to_pylist() == ["adb:R5CW", "qai-hub:Samsung Galaxy S24", None, None]
    table = table.slice(0, 2)
    assert LB.pareto_front(table, {"lpips": "min", "psnr": "max", "latency_ms": "min"}) == [True, False]
    assert board.to_pandas()["model_id"].tolist() == ["a", "b", "c", "d"]


def test_parity_is_typed_and_an_older_table_is_read_into_the_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "lb.parquet"
    parity = [{"format": "tflite", "kind": "real", "psnr_db": 61.5, "max_lsb": 0.4, "max_abs": 1e-3,
               "passed": True, "blocking": True, "quality_drop_db": None}]
    LB.append_rows([_row(0, parity=parity, artifact_bytes={"tflite": 12345})], p)
    t = LB.read(p)
    assert t.schema.field("parity").type == pa.list_(LB.PARITY)  # typed, not a JSON string
    assert t.column("parity").to_pylist()[0][0]["psnr_db"] == 61.5
    assert dict(t.column("artifact_bytes").to_pylist()[0])["tflite"] == 12345
    old = tmp_path / "old.parquet"  # a table from before: parity as a JSON string, fewer latency fields
    pq.write_table(pa.Table.from_pylist([{"model_id": "o", "parity": '{"parity/tflite/real": 1e-7}', "psnr": 20.0,
                                          "latency": [{"target": "cpu", "median_ms": 9.0}], "latency_ms": 9.0,
                                          "latency_target": "cpu", "mai_score": 1e11}]), old)
    t = LB.read(old)
    assert t.schema.equals(LB.SCHEMA)
    row = t.to_pylist()[0]
    assert row["parity"] == [] and row["latency"][0]["median_ms"] == 9.0 and row["mai_score"] is None
    LB.append_rows([_row(1)], old)
    assert LB.read(old).column("model_id").to_pylist() == ["o", "m1"]


def test_leaderboard_cli_formats(tmp_path, capsys):
    p = tmp_path / "lb.parquet"
    LB.append_rows([_row(0), _row(1)], p)
    code, out, err = run_cli(capsys, "leaderboard", "--path", p, "--format", "json", "--sort", "psnr", "--top", "1")
    assert code == 0, err
    import json

    rows = json.loads(out)
    assert [x["model_id"] for x in rows] == ["m1"] and rows[0]["pareto"] is True
    code, _, err = run_cli(capsys, "leaderboard", "--path", p, "--sort", "nope")
    assert code == 2 and "--sort 'nope'" in err
    code, _, err = run_cli(capsys, "leaderboard", "add", "--weights", "w.pt", "--format", "mai2022")
    assert code == 2 and "unrecognized arguments: --format" in err  # no --format alias of --data-format


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (scripts/system-deps.sh)")
def test_html_report_renders_in_chromium(tmp_path, capsys):
    from isp_search.data.io import write_rgb

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        crop = tmp_path / f"c{i}.png"
        write_rgb(crop, rng.random((32, 32, 3)))
        rows.append(_row(i, sample_crop=str(crop), target_crop=str(crop)))
    p = tmp_path / "lb.parquet"
    LB.append_rows(rows, p)
    html = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "leaderboard", "--path", p, "--format", "html", "--out", html)
    assert code == 0, err
    text = html.read_text()
    assert text.count("<tr class=") == 4 and "data:image/png;base64," in text and "m3" in text
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chrome'}", f"--screenshot={shot}", "--window-size=1200,1400",
                    f"file://{html}"], capture_output=True, timeout=120)
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] >= 1000
    top = img[150:700]  # the Pareto plot sits under the title: a real picture, not a blank page
    assert top.std() > 20 and len(np.unique(top.reshape(-1, 3), axis=0)) > 50
