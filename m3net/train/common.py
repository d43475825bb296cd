"""Pieces the training, evaluation and prediction loops share."""
import numpy as np
import torch


class FeatureBank:
    """A cache's features resident on ``device`` (float16), gathered into episode tensors.

    With augmented views (V, K, T, ...) training draws one view per clip from the episode's RNG;
    evaluation uses view 0.
    """

    def __init__(self, cached, device):
        self.features = torch.from_numpy(np.ascontiguousarray(cached.features)).to(device)
        self.has_views = self.features.dim() == 6
        self.device = device

    @property
    def clip_shape(self):
        return tuple(self.features.shape[2:] if self.has_views else self.features.shape[1:])  # (T, H, W, C)

    def gather(self, rows, rng=None):
        index = torch.as_tensor(rows, device=self.device)
        if not self.has_views:
            return self.features[index]
        views = rng.integers(0, self.features.shape[1], size=len(rows)) if rng is not None else np.zeros(len(rows), int)
        return self.features[index, torch.as_tensor(views, device=self.device)]

    def episode(self, episode, rng=None):
        """(support (S,T,H,W,C), support_labels (S,), query (Q,T,H,W,C), query_labels (Q,))."""
        return (
            self.gather(episode.support_rows, rng),
            torch.as_tensor(episode.support_labels, device=self.device),
            self.gather(episode.query_rows, rng),
            torch.as_tensor(episode.query_labels, device=self.device),
        )


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
