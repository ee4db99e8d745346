"""Self-contained HTML report of the leaderboard: the Pareto scatter (inline SVG), the models with their context
(data set, latency target/runtime/precision/device, deployed file sizes), sample crops beside the target.

Every model is in the scatter: one without a latency is drawn in a separate "no latency" strip at the right of
the latency panel (and one without LPIPS or PSNR in a strip of its own), each point is numbered as in the table,
and the legend sits outside the plotting area, so it hides nothing. Columns a row does not have are left out, and
columns the table gains later appear under "Context" without a change here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

DEFAULT_OBJECTIVES = {"lpips": "min", "psnr": "max", "latency_ms": "min"}

# The plain-text table (`isp-search leaderboard`) shows these; the HTML report shows more (see render_html).
COLUMNS = ("model_id", "kind", "backbone", "mode", "search_id", "trial_id", "params", "macs", "psnr", "ssim", "ms_ssim",
           "lpips", "lpips_weights", "latency_ms", "latency_target", "mai_score")

# Shown in their own columns or tables, never again under "Context".
_SHOWN = {"model_id", "kind", "backbone", "mode", "params", "macs", "macs_size", "psnr", "ssim", "ms_ssim", "lpips",
          "lpips_weights", "dists", "latency_ms", "mai_score", "latency", "artifacts", "sha256", "sample_crop",
          "target_crop", "config", "created", "parity", "artifact_bytes", "deploy_size", "gate_size", "latency_statistic",
          "mai_target", "data_format", "data_root", "eval_split", "n_test_images", "data_fingerprint"}
_DATA_KEYS = ("data_format", "data_name", "dataset", "data_root", "data_split", "eval_split", "n_test_images",
              "data_n_images", "data_fingerprint")
NO_LATENCY_STRIP = "#fde2c7"  # the strip's fill (the Chromium test looks for it)


def fmt_count(n: float | None, unit: str = "") -> str:
    """1580000000 -> '1.58 G' (k, M, G, T)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g} {prefix}{unit}"
    return f"{n:g} {unit}".strip()


def fmt_bytes(n: int | None) -> str:
    """File size in KB / MB (powers of 1000, as TFLite's tools print them)."""
    if n is None:
        return "–"
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} B"


def _items(v) -> dict:
    """A Parquet map column reads back as a list of (key, value) pairs; a dict stays a dict."""
    if v is None:
        return {}
    return dict(v) if not isinstance(v, dict) else v


def kind_label(row: dict) -> str:
    """``search``, or ``baseline`` with its role in the study (start | default) when the row names one."""
    kind = row.get("kind") or "search"
    config = row.get("config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            config = {}
    role = config.get("baseline") if isinstance(config, dict) else None
    return html.escape(f"{kind} ({role})" if kind == "baseline" and role else kind)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(p, tuple) and len(p) == 2 for p in v)):
        v = ", ".join(f"{k}={x}" for k, x in _items(v).items())  # a map column
    elif isinstance(v, (list, tuple)):
        v = ", ".join(map(str, v))
    return html.escape(str(v))


def artifact_sizes(row: dict) -> dict[str, int]:
    """Bytes of each deployed file: from a bytes column when the row has one, else from the files themselves."""
    for key in ("artifact_bytes", "bytes", "sizes"):
        got = {k: int(v) for k, v in _items(row.get(key)).items() if v is not None}
        if got:
            return got
    out = {}
    for fmt, path in _items(row.get("artifacts")).items():
        if path and Path(path).is_file():
            out[fmt] = Path(path).stat().st_size
    return out


def _deployed_size(row: dict) -> str:
    sizes = artifact_sizes(row)
    at = f", {html.escape(str(row['deploy_size']))}" if row.get("deploy_size") else ""
    for fmt in ("tflite_fp16", "tflite", "tflite_fp32"):  # the file a phone runs (fp16 on its GPU)
        if fmt in sizes:
            return f"{fmt_bytes(sizes[fmt])} ({fmt}{at})"
    return next((f"{fmt_bytes(v)} ({k}{at})" for k, v in sizes.items()), "–")


def _data_label(row: dict) -> str:
    parts = [f"{row[k]} images" if k in ("n_test_images", "data_n_images") else str(row[k])
             for k in _DATA_KEYS if row.get(k) not in (None, "")]
    return html.escape(" · ".join(parts)) if parts else "–"


def _latency_entry(row: dict) -> dict:
    """The latency entry the row's ``latency_ms`` comes from (else the first)."""
    entries = [e for e in (row.get("latency") or []) if e]
    for e in entries:
        if row.get("latency_ms") is not None and e.get("median_ms") == row.get("latency_ms"):
            return e
    return entries[0] if entries else {}


def _latency_label(row: dict) -> str:
    e = _latency_entry(row)
    keys = ("target", "runtime", "precision", "delegate", "device", "soc", "host_cpu", "threads", "size")
    parts = [str(row.get("latency_target") or e.get("target") or "")]
    parts += [f"{e[k]} threads" if k == "threads" else str(e[k]) for k in keys[1:] if e.get(k) not in (None, "")]
    parts = [p for p in dict.fromkeys(parts) if p]
    return html.escape(", ".join(parts)) if parts else "–"


def _paren(v) -> str:
    return f" ({html.escape(str(v))})" if v not in (None, "") else ""


def _present(rows: list[dict], key: str) -> bool:
    return any(r.get(key) not in (None, "", []) for r in rows)


def scatter_svg(rows: list[dict], front: list[bool]) -> str:
    """Two panels, PSNR against latency and against LPIPS; point ``i`` is ``<g id="model-i">``, numbered i+1."""

    matplotlib.use("Agg")

    backbones = list(dict.fromkeys(str(r.get("backbone") or "?") for r in rows))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backbones)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=100, layout="constrained")
    psnr = [r.get("psnr") for r in rows]
    ys = _with_strip([p for p in psnr if p is not None], psnr, log=False)
    for ax, key, label, log in ((axes[0], "latency_ms", "latency ms (log; lower is better)", True),
                                (axes[1], "lpips", "LPIPS (lower is better)", False)):
        vals = [r.get(key) for r in rows]
        vals = [v if v is None or (v > 0 or not log) else None for v in vals]
        xs = _with_strip([v for v in vals if v is not None], vals, log=log)
        # 12, 20 ms rather than 1.2 x 10^1; no number under the strip, whose points have none
        plain = FuncFormatter(lambda v, _, s=xs["strip"]: f"{v:g}" if s is None or v < s[0] else "")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(plain if xs["lim"][1] / xs["lim"][0] < 10 else NullFormatter())
        ax.xaxis.set_major_formatter(plain)
        if any(v is None for v in vals):  # the strip that keeps models without this number in the plot
            lo, hi = xs["strip"]
            band = ax.axvspan(lo, hi, color=NO_LATENCY_STRIP if key == "latency_ms" else "#e0e0e0", zorder=0)
            band.set_gid("no-latency-strip" if key == "latency_ms" else f"no-{key}-strip")
            ax.text(math.sqrt(lo * hi) if log else (lo + hi) / 2, 1.0, f"no {key.split('_')[0]}", ha="center",
                    va="bottom", transform=ax.get_xaxis_transform(), fontsize=8, color="#8a4b0f")
        if any(p is None for p in psnr):
            lo, hi = ys["strip"]
            ax.axhspan(lo, hi, color="#e0e0e0", zorder=0).set_gid("no-psnr-strip")
            ax.text(0.01, (lo + hi) / 2, "no PSNR", va="center", transform=ax.get_yaxis_transform(), fontsize=8)
        for i, r in enumerate(rows):
            x, y = xs["pos"][i], ys["pos"][i]
            missing = vals[i] is None or psnr[i] is None
            pt = ax.scatter([x], [y], s=70, color=colours[str(r.get("backbone") or "?")], edgecolor="k",
                            marker="s" if missing else "o", zorder=3)
            pt.set_gid(f"model-{i}" if key == "latency_ms" else f"model-{i}-{key}")
            if front[i]:
                ax.scatter([x], [y], s=220, facecolor="none", edgecolor="red", lw=2, zorder=2)
            ax.annotate(str(i + 1), (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8)
        ax.patch.set_gid(f"axes-{key}")
        ax.set_xlim(*xs["lim"])
        ax.set_ylim(*ys["lim"])
        ax.set_xlabel(label)
        ax.set_ylabel("PSNR dB (higher is better)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[b], mec="k", label=b) for b in backbones]
    handles.append(plt.Line2D([], [], ls="", marker="o", mfc="none", mec="red", mew=2, ms=12, label="Pareto-optimal"))
    if any(r.get(k) is None for r in rows for k in ("latency_ms", "lpips", "psnr")):
        handles.append(plt.Line2D([], [], ls="", marker="s", color="#bbb", mec="k",
                                  label="number missing (in a strip)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), frameon=False).set_gid(
        "legend")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _with_strip(present: list[float], vals: list, log: bool) -> dict:
    """Axis limits with room for a strip past the upper end, where the ``None`` values are placed."""
    if not present:
        present = [1.0]
    lo, hi = min(present), max(present)
    if log:
        lo, hi = lo / 1.5, hi * 1.5
        strip = (hi * 1.3, hi * 2.6) if any(v is None for v in vals) else None
        spot, top = (math.sqrt(strip[0] * strip[1]), strip[1]) if strip else (None, hi)
    else:
        pad = (hi - lo) * 0.12 or max(abs(hi) * 0.05, 0.05)
        lo, hi = lo - pad, hi + pad
        strip = (hi + pad * 0.3, hi + pad * 2.3) if any(v is None for v in vals) else None
        spot, top = ((strip[0] + strip[1]) / 2, strip[1]) if strip else (None, hi)
    pos = [v if v is not None else spot for v in vals]
    return {"pos": pos, "lim": (lo, top), "strip": strip}


def render_html(rows: list[dict], front: list[bool], title: str = "isp-search leaderboard") -> str:
    plot = scatter_svg(rows, front) if rows else "<p>no models yet</p>"
    random_note = any(r.get("lpips_weights") == "random" for r in rows)
    main = [("#", lambda i, r: str(i + 1)), ("pareto", lambda i, r: "★" if front[i] else ""),
            ("model", lambda i, r: _fmt(r.get("model_id"))), ("kind", lambda i, r: kind_label(r)),
            ("backbone", lambda i, r: _fmt(r.get("backbone"))),
            ("mode", lambda i, r: _fmt(r.get("mode"))), ("params", lambda i, r: fmt_count(r.get("params"))),
            ("MACs", lambda i, r: fmt_count(r.get("macs")) + (f" @ {html.escape(r['macs_size'])}"
                                                             if r.get("macs_size") else ""))]
    for key, name in (("psnr", "PSNR dB"), ("ssim", "SSIM"), ("ms_ssim", "MS-SSIM"), ("lpips", "LPIPS"),
                      ("dists", "DISTS")):
        if _present(rows, key):
            main.append((name, lambda i, r, k=key: _fmt(r.get(k)) + (
                f" ({html.escape(r['lpips_weights'])})" if k == "lpips" and r.get("lpips_weights") else "")))
    main += [("data set", lambda i, r: _data_label(r)),
             ("latency ms", lambda i, r: _fmt(r.get("latency_ms")) + _paren(r.get("latency_statistic"))),
             ("latency of", lambda i, r: _latency_label(r)),
             ("MAI score", lambda i, r: _fmt(r.get("mai_score")) + _paren(r.get("mai_target"))),
             ("deployed file", lambda i, r: _deployed_size(r))]
    head = "".join(f"<th>{h}</th>" for h, _ in main)
    body = "".join(f"<tr class='{' '.join(c for c, on in (('front', front[i]), ('baseline', r.get('kind') == 'baseline')) if on)}' id='row-{i}'>"
                   + "".join(f"<td>{cell(i, r)}</td>" for _, cell in main) + "</tr>" for i, r in enumerate(rows))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222}}
table{{border-collapse:collapse;font-size:13px;margin-bottom:12px}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}} tr.front{{background:#fff3c4}}
tr.baseline td{{font-style:italic;color:#345}}
td.l,th.l{{text-align:left}} .pair{{display:inline-block;margin:8px;vertical-align:top}}
.pair img{{width:160px;image-rendering:pixelated}} figure{{display:inline-block;margin:4px}} .warn{{color:#a40}}
#pareto svg{{max-width:100%;height:auto}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{len(rows)} exported models; ★ = Pareto-optimal on LPIPS↓, PSNR↑, latency↓;
<i>baseline</i> rows (italic) are what a search is judged against: its start and its default point.
Point numbers in the plot are the # column.</p>{_random_note() if random_note else ""}
<div id="pareto">{plot}</div>
<h2>Models</h2><div style="overflow-x:auto"><table id="models"><thead><tr>{head}</tr></thead>
<tbody>{body}</tbody></table></div>
<h2>Latency</h2>{_entries_table(rows, "latency", "no latency measured")}
<h2>Parity of the deployed files against PyTorch</h2>{_entries_table(rows, "parity", "not recorded")}
<h2>Deployed files</h2>{_artifact_table(rows)}
<h2>Context</h2>{_context_table(rows)}
<h2>Sample crops</h2>{_crops(rows) or '<p>none</p>'}
</body></html>"""


def _random_note() -> str:
    return ("<p class='warn'>LPIPS marked <b>random</b> was computed with randomly initialised backbones "
            "(no pretrained weights available): compare those numbers only with each other.</p>")


def _entries_table(rows: list[dict], key: str, empty: str) -> str:
    """One line per entry of a list-of-structs column (latency, parity), with the fields any entry has."""
    entries = [(i, e) for i, r in enumerate(rows) for e in (r.get(key) or []) if e]
    if not entries:
        return f"<p>{empty}</p>"
    keys = list(dict.fromkeys(k for _, e in entries for k, v in e.items() if v is not None))
    head = "<th>#</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(f"<tr><td>{i + 1}</td>" + "".join(f"<td>{_fmt(e.get(k))}</td>" for k in keys) + "</tr>"
                   for i, e in entries)
    table = f"<table id='{key}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div style='overflow-x:auto'>{table}</div>"


def _artifact_table(rows: list[dict]) -> str:
    lines = []
    for i, r in enumerate(rows):
        sizes, digests = artifact_sizes(r), _items(r.get("sha256"))
        for fmt, path in _items(r.get("artifacts")).items():
            digest = html.escape(str(digests.get(fmt) or "–")[:16])
            lines.append(f"<tr><td>{i + 1}</td><td class='l'>{html.escape(fmt)}</td><td>{fmt_bytes(sizes.get(fmt))}"
                         f"</td><td class='l'><code>{digest}</code></td>"
                         f"<td class='l'>{html.escape(str(path))}</td></tr>")
    if not lines:
        return "<p>none</p>"
    return ("<table id='artifacts'><thead><tr><th>#</th><th class='l'>format</th><th>size</th>"
            f"<th class='l'>sha256</th><th class='l'>file</th></tr></thead><tbody>{''.join(lines)}</tbody></table>")


def _context_table(rows: list[dict]) -> str:
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _SHOWN and _present(rows, k)]
    if not keys:
        return "<p>none</p>"
    head = "<th>#</th>" + "".join(f"<th class='l'>{html.escape(k)}</th>" for k in keys)
    body = "".join(f"<tr><td>{i + 1}</td>" + "".join(f"<td class='l'>{_fmt(r.get(k))}</td>" for k in keys)
                   + "</tr>" for i, r in enumerate(rows))
    table = f"<table id='context'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div style='overflow-x:auto'>{table}</div>"


def _data_uri_png(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _crops(rows: list[dict]) -> str:
    out = []
    for i, r in enumerate(rows):
        s, t = _data_uri_png(r.get("sample_crop")), _data_uri_png(r.get("target_crop"))
        if s:
            tgt = f"<figure><img src='{t}'><figcaption>target</figcaption></figure>" if t else ""
            out.append(f"<div class='pair'><h4>{i + 1}. {html.escape(str(r.get('model_id')))}</h4><figure>"
                       f"<img src='{s}'><figcaption>output</figcaption></figure>{tgt}</div>")
    return "".join(out)


def write_report(rows: list[dict], front: list[bool], out: str | os.PathLike) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(render_html(rows, front))
    os.replace(tmp, p)
    return p
