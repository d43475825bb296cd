"""Accuracy of an episode and the mean ± 95% CI over episodes, as every loop reports them."""
import numpy as np


def mean_and_ci(values):
    """Mean and 95% confidence half-width (1.96·std/√n) of per-episode values, in percent."""
    values = np.asarray(values, dtype=np.float64) * 100
    if len(values) == 0:
        return float("nan"), float("nan")
    ci = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(ci)


def episode_accuracies(outputs, query_labels):
    """{view: fraction of queries whose argmax is right} for each logits view of a head."""
    return {view: (logits.argmax(dim=-1) == query_labels).float().mean().item() for view, logits in outputs.items()}
