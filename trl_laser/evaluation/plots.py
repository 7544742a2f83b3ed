"""PNG plots of an evaluation: score histograms by correctness, aggregation curves against k, reliability diagram,
ROC curves of r_s and the free verifiers.

matplotlib runs on the Agg backend (no display needed). Each function writes one file and returns its path.
"""

import math
import os
from collections.abc import Sequence

from ..core.self_reward import CORRECT_THRESHOLD
from .metrics import auroc, reliability_bins, roc_curve


CURVE_LABELS = {
    "majority": "majority vote (maj@k)",
    "weighted": "self-reward weighted vote",
    "best_of": "best-of-k by self-reward",
    "pass": "pass@k (any correct)",
}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_histogram(scores: Sequence[float | None], labels: Sequence[bool], path: str, num_bins: int = 30) -> str:
    """Histograms of r_s (unclipped) for correct and incorrect samples, with the decision threshold."""
    plt = pyplot()
    correct = [s for s, y in zip(scores, labels, strict=True) if s is not None and y]
    incorrect = [s for s, y in zip(scores, labels, strict=True) if s is not None and not y]
    values = correct + incorrect
    fig, ax = plt.subplots(figsize=(6, 4))
    if values:
        low, high = min(*values, 0.0), max(*values, 1.0)
        edges = [low + (high - low) * i / num_bins for i in range(num_bins + 1)]
        ax.hist(correct, bins=edges, alpha=0.6, color="tab:green", label=f"correct (n={len(correct)})")
        ax.hist(incorrect, bins=edges, alpha=0.6, color="tab:red", label=f"incorrect (n={len(incorrect)})")
    ax.axvline(CORRECT_THRESHOLD, color="black", linestyle="--", linewidth=1, label=f"threshold {CORRECT_THRESHOLD}")
    unscored = len(scores) - len(values)
    ax.set_xlabel("self-reward score $r_s$")
    ax.set_ylabel("completions")
    ax.set_title("Self-reward by correctness" + (f" ({unscored} truncated, unscored)" if unscored else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_aggregation_curves(ax, curves: dict[str, dict[int, float]], accuracy: float | None = None) -> None:
    """Accuracy of majority vote, weighted vote, best-of-k (and pass@k, dotted) against k (log₂ axis), on `ax`."""
    styles = {"majority": "o-", "weighted": "s-", "best_of": "^-", "pass": "k:"}
    for method, per_k in curves.items():
        if not per_k:
            continue
        ks = sorted(int(k) for k in per_k)  # keys are strings once read back from results.json
        values = [per_k[k] if k in per_k else per_k[str(k)] for k in ks]
        ax.plot(ks, values, styles.get(method, "-"), label=CURVE_LABELS.get(method, method))
    if accuracy is not None and not math.isnan(accuracy):
        ax.axhline(accuracy, color="gray", linewidth=1, linestyle="--", label="mean accuracy (pass@1)")
    all_ks = sorted({int(k) for per_k in curves.values() for k in per_k})
    if all_ks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)


def plot_aggregation_curves(curves: dict[str, dict[int, float]], path: str, accuracy: float | None = None) -> str:
    """`draw_aggregation_curves` as one PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_aggregation_curves(ax, curves, accuracy)
    ax.set_title("Test-time aggregation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(
    scores: Sequence[float | None], labels: Sequence[bool], path: str, num_bins: int = 10, ece: float | None = None
) -> str:
    """Reliability diagram of clip(r_s, 0, 1): accuracy per confidence bin against the diagonal, with bin counts."""
    plt = pyplot()
    bins = reliability_bins(scores, labels, num_bins)
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / num_bins
    filled = [b for b in bins if b.count]
    ax.bar(
        [b.lower for b in filled],
        [b.accuracy for b in filled],
        width=width,
        align="edge",
        edgecolor="black",
        color="tab:blue",
        alpha=0.7,
        label="accuracy in bin",
    )
    ax.plot(
        [b.confidence for b in filled],
        [b.accuracy for b in filled],
        "o",
        color="tab:orange",
        label="(mean confidence, accuracy)",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction correct")
    title = "Reliability of clip($r_s$, 0, 1)"
    if ece is not None and not math.isnan(ece):
        title += f" — ECE {ece:.3f}"
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    counts.bar(
        [b.lower for b in bins], [b.count for b in bins], width=width, align="edge", edgecolor="black", color="gray"
    )
    counts.set_xlabel("confidence clip($r_s$, 0, 1)")
    counts.set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_roc_curves(ax, verifiers: dict[str, tuple[Sequence[float | None], Sequence[bool]]]) -> None:
    """ROC curves of several verifiers on `ax`, each given as (scores, labels), labelled with their AUROC; r_s (the
    key `r_s`) drawn first and thicker."""
    for name, (scores, labels) in sorted(verifiers.items(), key=lambda item: item[0] != "r_s"):
        fpr, tpr = roc_curve(scores, labels)
        if not fpr:
            continue
        width = 2.5 if name == "r_s" else 1.2
        ax.plot(fpr, tpr, linewidth=width, label=f"{name} (AUROC {auroc(scores, labels):.3f})")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("false-positive rate (wrong answers accepted)")
    ax.set_ylabel("true-positive rate (right answers accepted)")
    ax.legend(fontsize=7, loc="lower right")


def plot_roc_curves(verifiers: dict[str, tuple[Sequence[float | None], Sequence[bool]]], path: str) -> str:
    """`draw_roc_curves` as one PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    draw_roc_curves(ax, verifiers)
    ax.set_title("Verifying the model's own answers: $r_s$ and the free verifiers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(report_dir: str, scores, labels, curves, accuracy=None, ece=None, verifiers=None) -> list[str]:
    """The plots of `trl-laser evaluate`, written into `report_dir` (the ROC curves when `verifiers` are given:
    name -> (scores, labels), as `draw_roc_curves` takes them)."""
    paths = [
        plot_score_histogram(scores, labels, os.path.join(report_dir, "score_histogram.png")),
        plot_aggregation_curves(curves, os.path.join(report_dir, "aggregation_curves.png"), accuracy),
        plot_reliability(scores, labels, os.path.join(report_dir, "reliability.png"), ece=ece),
    ]
    if verifiers:
        paths.append(plot_roc_curves(verifiers, os.path.join(report_dir, "roc_curves.png")))
    return paths
