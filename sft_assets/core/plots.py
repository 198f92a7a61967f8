"""Small PNG charts for Dagster metadata and dataset cards: deterministic bytes, no display."""

import functools
import io

import numpy as np

# Label fonts in fallback order: matplotlib's own DejaVu Sans for Latin text, then Noto Sans CJK SC
# (from the noto-cjk-sans-otc package, a project dependency) for Chinese category names and reasons.
PLOT_FONTS = ("DejaVu Sans", "Noto Sans CJK SC")


@functools.cache
def plot_fonts() -> list[str]:
    """``PLOT_FONTS``, the CJK one registered with matplotlib from the installed package, so Chinese
    labels draw as characters on a fresh machine (not as boxes) without any system font."""
    import noto_cjk_sans_otc
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(noto_cjk_sans_otc.FONT_PATH))
    return list(PLOT_FONTS)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = plot_fonts()
    return plt, plt.figure(figsize=(6, 3.2), dpi=80)


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def histogram_png(values, title: str, bins: int = 30) -> bytes:
    plt, fig = _figure()
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig.gca().hist(values, bins=bins)
    fig.gca().set_title(title)
    return _png(plt, fig)


def bar_png(labels: list[str], counts: list[int], title: str) -> bytes:
    plt, fig = _figure()
    fig.gca().barh(labels[::-1], counts[::-1])
    fig.gca().set_title(title)
    return _png(plt, fig)


def png_markdown(png: bytes, alt: str) -> str:
    """An inline image the Dagster UI renders in markdown metadata."""
    import base64

    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def arm_losses_png(summary: dict[str, dict], title: str) -> bytes:
    """Mean loss per arm with the std over seeds as error bars (``summary``: arm -> {mean, std})."""
    plt, fig = _figure()
    arms = list(summary)
    means = [summary[a]["mean"] for a in arms]
    ax = fig.gca()
    ax.bar(arms, means, yerr=[summary[a]["std"] for a in arms], capsize=4)
    low, high = min(means), max(means)
    pad = max(high - low, max(summary[a]["std"] for a in arms), 1e-3)
    ax.set_ylim(low - 2 * pad, high + 2 * pad)
    ax.set_ylabel("answer loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _png(plt, fig)
