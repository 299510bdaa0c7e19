"""PNG plots of a training run's metrics.jsonl: the reward curve and a grid of diagnostics.

RL curves are noisy, so every series is drawn twice: the raw values, light, and a moving
average on top so the trend is visible. matplotlib is imported only
here, and each figure gets its own Agg canvas, so plotting never needs a display and never
touches pyplot's global state (safe from a training process or a test).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics_log import METRICS_FILE, read_metrics

_ENV_MEAN = re.compile(r"^reward/(.+)/mean$")
# Panels in the order a reader checks them; groups not listed follow alphabetically.
_ORDER = ("loss", "kl", "entropy", "clip_frac", "grad_norm", "lr", "length", "tokens_per_s", "time",
          "frac_zero_std", "component", "episodes", "steps")  # fmt: skip
_TITLES = {
    "clip_frac": "clip fraction",
    "length": "length (tokens)",
    "tokens_per_s": "tokens/s",
    "time": "time (s)",
    "component": "reward components (mean)",
    "frac_zero_std": "groups with zero reward std",
}


class PlotError(ValueError):
    """The run directory has nothing to plot."""


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of the rows that carry `key`, null as NaN; None if all null."""
    pairs = [(row["step"], row[key]) for row in rows if key in row]
    values = np.array([math.nan if v is None else float(v) for _, v in pairs], dtype=float)
    if not np.isfinite(values).any():
        return None
    return np.array([s for s, _ in pairs], dtype=float), values


def _smooth(values: np.ndarray) -> np.ndarray:
    """Centered moving average over about a fifteenth of the run: no lag, unlike an EMA,
    which suits a finished curve; gaps (null) stay gaps and are left out of the windows."""
    half = len(values) // 30
    finite = np.isfinite(values)
    kernel = np.ones(2 * half + 1)
    sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(float), kernel, mode="same")
    return np.where(finite, sums / np.maximum(counts, 1.0), math.nan)


def _draw(ax: Any, steps: np.ndarray, values: np.ndarray, label: str, color: Any) -> None:
    """Raw series (light, with markers when short enough to see points) and its trend."""
    marker = "o" if np.isfinite(values).sum() <= 30 else None
    ax.plot(steps, values, color=color, alpha=0.3, linewidth=1, marker=marker, markersize=3)
    ax.plot(steps, _smooth(values), color=color, linewidth=2, label=label)


def _new_figure(ncols: int, nrows: int, width: float, height: float) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def _plot_reward(rows: Sequence[dict[str, Any]], keys: Sequence[str], path: Path) -> bool:
    """reward.png: the mean with a ±std band, and per-environment means when there are several."""
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    mean = _series(rows, "reward/mean")
    envs = {m.group(1): s for k in keys if (m := _ENV_MEAN.match(k)) and (s := _series(rows, k))}
    if mean is None and not envs:
        return False
    show_envs = len(envs) > 1 or mean is None
    fig, axes = _new_figure(int(mean is not None) + int(show_envs), 1, 6.5, 4.0)
    if mean is not None:
        ax = axes.pop(0)
        steps, values = mean
        std = _series(rows, "reward/std")
        if std is not None and np.array_equal(std[0], steps):
            ax.fill_between(
                steps, values - std[1], values + std[1], color=colors[0], alpha=0.15, label="±std"
            )
        _draw(ax, steps, values, "reward/mean", colors[0])
        ax.set_title("reward")
        ax.legend(fontsize=8)
    if show_envs:
        ax = axes.pop(0)
        for i, (env, (steps, values)) in enumerate(sorted(envs.items())):
            _draw(ax, steps, values, env, colors[i % len(colors)])
        ax.set_title("reward by environment (mean)")
        ax.legend(fontsize=8)
    for ax in fig.axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return True


def _groups(keys: Sequence[str]) -> dict[str, list[str]]:
    """Non-reward metrics grouped by their first name segment, in panel order."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key in ("step", "time") or key.startswith("reward/"):
            continue
        groups.setdefault(key.split("/", 1)[0], []).append(key)
    rank = {name: i for i, name in enumerate(_ORDER)}
    return dict(sorted(groups.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _label(group: str, key: str) -> str:
    label = key.removeprefix(group + "/") if key != group else key
    return label.removesuffix("/mean") if group == "component" else label


def _plot_metrics(rows: Sequence[dict[str, Any]], keys: Sequence[str], path: Path) -> bool:
    """metrics.png: one small panel per metric group, null-only metrics left out."""
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    panels: list[tuple[str, list[tuple[str, tuple[np.ndarray, np.ndarray]]]]] = []
    for group, members in _groups(keys).items():
        series = [(_label(group, k), s) for k in members if (s := _series(rows, k)) is not None]
        if series:
            panels.append((group, series))
    if not panels:
        return False
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _new_figure(ncols, nrows, 4.2, 2.8)
    for ax, (group, series) in zip(axes, panels, strict=False):
        for i, (label, (steps, values)) in enumerate(series):
            _draw(ax, steps, values, label, colors[i % len(colors)])
        ax.set_title(_TITLES.get(group, group), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(series) > 1 or series[0][0] != group:
            ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.savefig(path, dpi=100)
    return True


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write reward.png and metrics.png for a run (default into run_dir/plots); return their paths."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise PlotError(f"no run directory at {run_dir}")
    if not metrics_path.is_file():
        raise PlotError(f"no {METRICS_FILE} in {run_dir}: is it a training run's directory?")
    try:
        rows = read_metrics(metrics_path)
    except ValueError as exc:
        raise PlotError(str(exc)) from exc
    if not rows:
        raise PlotError(f"{metrics_path} has no rows yet")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in (("reward.png", _plot_reward), ("metrics.png", _plot_metrics)):
        if plot(rows, keys, out / name):
            written.append(out / name)
    if not written:
        raise PlotError(f"{metrics_path} has no non-null metrics to plot")
    return written
