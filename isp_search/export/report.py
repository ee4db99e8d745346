"""Self-contained HTML report of the leaderboard: Pareto scatter, sample crops beside the target, the table."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

DEFAULT_OBJECTIVES = {"lpips": "min", "psnr": "max", "latency_ms": "min"}


def _data_uri_png(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def pareto_plot_png(rows: list[dict], front: list[bool]) -> bytes:
    """PSNR vs LPIPS scatter, latency as colour; Pareto-optimal models ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    pts = [(r.get("lpips"), r.get("psnr"), r.get("latency_ms"), f) for r, f in zip(rows, front)]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if pts:
        lat = [p[2] if p[2] is not None else float("nan") for p in pts]
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=lat, cmap="viridis", s=70, edgecolor="k")
        fig.colorbar(sc, ax=ax, label="latency (ms)")
        on = [p for p in pts if p[3]]
        ax.scatter([p[0] for p in on], [p[1] for p in on], s=220, facecolor="none", edgecolor="red", lw=2,
                   label="Pareto front")
        ax.legend(loc="lower left")
    ax.set_xlabel("LPIPS (lower is better)")
    ax.set_ylabel("PSNR dB (higher is better)")
    ax.set_title("Exported models")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


COLUMNS = ("model_id", "backbone", "mode", "search_id", "trial_id", "params", "macs", "psnr", "ssim", "ms_ssim",
           "lpips", "lpips_weights", "latency_ms", "latency_target", "mai_score")


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_html(rows: list[dict], front: list[bool], title: str = "isp-search leaderboard") -> str:
    plot = base64.b64encode(pareto_plot_png(rows, front)).decode()
    random_note = any(r.get("lpips_weights") == "random" for r in rows)
    head = "".join(f"<th>{c}</th>" for c in ("pareto",) + COLUMNS)
    body = []
    for r, f in zip(rows, front):
        cells = "".join(f"<td>{_fmt(r.get(c))}</td>" for c in COLUMNS)
        body.append(f"<tr class='{'front' if f else ''}'><td>{'★' if f else ''}</td>{cells}</tr>")
    crops = []
    for r in rows:
        s, t = _data_uri_png(r.get("sample_crop")), _data_uri_png(r.get("target_crop"))
        if s:
            tgt = f"<figure><img src='{t}'><figcaption>target</figcaption></figure>" if t else ""
            crops.append(f"<div class='pair'><h4>{html.escape(str(r.get('model_id')))}</h4><figure>"
                         f"<img src='{s}'><figcaption>output</figcaption></figure>{tgt}</div>")
    note = ("<p class='warn'>LPIPS marked <b>random</b> was computed with randomly initialised backbones "
            "(no pretrained weights available): compare those numbers only with each other.</p>") if random_note else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}} tr.front{{background:#fff3c4}}
.pair{{display:inline-block;margin:8px;vertical-align:top}} .pair img{{width:160px;image-rendering:pixelated}}
figure{{display:inline-block;margin:4px}} .warn{{color:#a40}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{len(rows)} exported models; ★ = Pareto-optimal on LPIPS↓, PSNR↑, latency↓.</p>{note}
<img id="pareto" alt="Pareto scatter" src="data:image/png;base64,{plot}">
<h2>Models</h2><div style="overflow-x:auto"><table id="models"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>
<h2>Sample crops</h2>{''.join(crops) or '<p>none</p>'}
</body></html>"""


def write_report(rows: list[dict], front: list[bool], out: str | os.PathLike) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(render_html(rows, front))
    os.replace(tmp, p)
    return p
