"""Loss curves as PNG, from a Trainer's `state.log_history` (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path


def plot_losses(log_history: list[dict], path: str | Path, keys: tuple[str, ...] = ("loss",)) -> Path:
    """One panel per logged key in `keys` (those never logged are skipped) against the step;
    returns the PNG's path. Raises ValueError when none of `keys` was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {key: [(entry["step"], entry[key]) for entry in log_history if key in entry] for key in keys}
    series = {key: points for key, points in series.items() if points}
    if not series:
        raise ValueError(f"none of {keys} was logged; nothing to plot")
    figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for axis, (key, points) in zip(axes[0], series.items()):
        axis.plot(*zip(*points))
        axis.set(title=key, xlabel="step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


__all__ = ["plot_losses"]
