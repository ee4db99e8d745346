"""The HTML leaderboard report: formatted MACs and sizes, context columns, and — rendered in headless Chromium —
a scatter that keeps a model without latency (in its own strip) and a legend clear of every point."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from isp_search.export import leaderboard as LB
from isp_search.export.report import NO_LATENCY_STRIP, fmt_bytes, fmt_count, render_html


def _rows(tmp_path, n: int = 4, no_latency: int = 2) -> list[dict]:
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"\0" * 8188)
    rows = []
    for i in range(n):
        rows.append(dict(model_id=f"m{i}", backbone=("efficient_isp", "robust_isp")[i % 2], mode="unpaired",
                         params=3060, macs=1_580_000_000 + i * 100_000_000, macs_size="1088x1920", psnr=20.0 + i,
                         lpips=0.3 - 0.01 * i, lpips_weights="random", data_format="mai2022", data_root="/d/mai",
                         eval_split="test", n_test_images=16, data_fingerprint="1a2b3c4d5e6f7a8b",
                         latency=[{"target": "cpu", "runtime": "litert-xnnpack", "precision": "fp32",
                                   "median_ms": 10.0 + i, "threads": 2, "host_cpu": "AMD EPYC 9B45",
                                   "size": "1088x1920"}],
                         latency_ms=10.0 + i, latency_target="cpu", latency_statistic="median",
                         artifacts={"tflite": str(tfl)}, sha256={"tflite": "ab" * 32}, deploy_size="1088x1920",
                         parity=[{"format": "tflite", "kind": "real", "psnr_db": 61.25, "max_lsb": 0.4,
                                  "passed": True, "blocking": True}]))
    rows[no_latency].update(latency=[], latency_ms=None, latency_target=None)
    return rows


def test_report_formats_macs_sizes_and_context(tmp_path):
    assert fmt_count(1_580_000_000) == "1.58 G" and fmt_count(3060) == "3.06 k" and fmt_count(12) == "12"
    assert fmt_bytes(8188) == "8.19 KB" and fmt_bytes(2_500_000) == "2.5 MB" and fmt_bytes(None) == "–"
    p = tmp_path / "lb.parquet"
    LB.append_rows(_rows(tmp_path), p)  # through Parquet: map columns come back as (key, value) pairs
    rows = LB.read(p).to_pylist()
    text = render_html(rows, [False, False, False, True])
    assert "1.58 G @ 1088x1920" in text and "1580000000" not in text
    assert "8.19 KB (tflite, 1088x1920)" in text and "abababababababab" in text  # size from the file itself
    assert "cpu, litert-xnnpack, fp32, AMD EPYC 9B45, 2 threads, 1088x1920" in text and "10 (median)" in text
    assert "mai2022 · /d/mai · test · 16 images · 1a2b3c4d5e6f7a8b" in text and "<td>61.25</td>" in text
    assert text.count("<tr class=") == 4  # the models table; the other tables are plain


def _svg_box(path_d: str) -> tuple[float, float, float, float]:
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path_d)]
    xs, ys = nums[0::2], nums[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _group(dom: str, gid: str) -> str:
    start = dom.index(f'id="{gid}"')
    return dom[start:dom.index("</g>", start)]


@pytest.mark.slow  # the report CLI in a fresh process, rendered by headless Chromium (~11 s)
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (scripts/system-deps.sh)")
def test_report_in_chromium_keeps_a_model_without_latency(tmp_path):
    p = tmp_path / "lb.parquet"
    LB.append_rows(_rows(tmp_path), p)
    html = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "leaderboard", "--path", str(p), "--format", "html",
                        "--sort", "psnr", "--out", str(html)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run(chrome + ["--dump-dom", f"file://{html}"], capture_output=True, text=True, timeout=120).stdout
    # sorted by PSNR (descending): the model without latency, m2, is row 2 of 4
    assert [m for m in re.findall(r"<td>(m\d)</td>", dom)] == ["m3", "m2", "m1", "m0"]
    points = {}
    for i in range(4):  # every model is a point of the latency panel, at a position on the page
        use = re.search(r'<use [^>]*x="([\d.]+)" y="([\d.]+)"', _group(dom, f"model-{i}"))
        assert use, f"model {i} missing from the scatter"
        points[i] = (float(use.group(1)), float(use.group(2)))
    axes = _svg_box(re.search(r'\sd="([^"]+)"', _group(dom, "axes-latency_ms")).group(1))
    strip = _svg_box(re.search(r'\sd="([^"]+)"', _group(dom, "no-latency-strip")).group(1))
    assert all(axes[0] <= x <= axes[2] and axes[1] <= y <= axes[3] for x, y in points.values()), (points, axes)
    assert strip[0] <= points[1][0] <= strip[2]  # m2 (row 2) in the strip ...
    assert all(x < strip[0] for i, (x, _) in points.items() if i != 1)  # ... and only it
    legend = dom[dom.index('id="legend"'):dom.index("</svg>")]
    legend_y = [float(y) for y in re.findall(r'<use [^>]*y="([\d.]+)"', legend)]
    assert legend_y and min(legend_y) > axes[3]  # below the plotting area: it covers no point

    shot = tmp_path / "shot.png"
    subprocess.run(chrome + [f"--screenshot={shot}", "--window-size=1200,900", f"file://{html}"],
                   capture_output=True, timeout=120)
    import cv2

    img = cv2.imread(str(shot))[:, :, ::-1].astype(int)  # RGB
    want = np.array([int(NO_LATENCY_STRIP[k:k + 2], 16) for k in (1, 3, 5)])
    ys, xs = np.nonzero(np.abs(img - want).sum(-1) <= 6)
    assert len(ys) > 2000, "the no-latency strip is not on the screen"
    inside = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    marker = (inside.max(-1) - inside.min(-1) > 120) & (np.abs(inside - want).sum(-1) > 150)  # a backbone colour
    assert marker.sum() > 20, "no point drawn inside the no-latency strip"
