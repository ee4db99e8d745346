"""The study's plots: the Pareto front and per-objective parameter importances (Optuna's matplotlib backend)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import optuna

from isp_search.search.pareto import n_complete
from isp_search.search.space import SearchSpace

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
from optuna.visualization import matplotlib as vis  # noqa: E402

log = logging.getLogger(__name__)


def save_plots(study: optuna.Study, space: SearchSpace, out: Path) -> list[Path]:
    """Pareto front and per-objective parameter importances as PNG (Optuna's matplotlib backend)."""
    out.mkdir(parents=True, exist_ok=True)
    names = space.metric_names
    plots: list[Path] = []
    if n_complete(study) == 0:
        return plots

    def save(ax: Any, name: str) -> None:
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        plots.append(out / name)

    if 2 <= len(names) <= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save(vis.plot_pareto_front(study, target_names=names), "pareto_front.png")
    for i, o in enumerate(space.objectives):
        # Optuna's default evaluator (PED-ANOVA) ranks what drives a *low* target: flip maximised objectives.
        sign = 1.0 if o.direction == "min" else -1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = vis.plot_param_importances(study, target=(lambda t, i=i, s=sign: s * t.values[i]),
                                                target_name=o.metric if sign > 0 else f"-{o.metric}")
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials or no variation yet
            log.warning("no parameter importances for %s: %s", o.metric, e)
            continue
        save(ax, f"param_importances_{o.metric}.png")
    return plots


