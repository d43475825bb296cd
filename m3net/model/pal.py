"""The PAL head: prototype-centred attentive learning with its hybrid (query- and prototype-centred) loss."""
import torch
import torch.nn.functional as F
from torch import nn

from m3net.config import setting, settings
from m3net.model.base import FewShotHead, HeadConfig, class_means, num_classes
from m3net.model.registry import register_head


def cosine_with_margin(x, y, epsilon=0.01):
    """x·y / (‖x‖‖y‖ + ε) as in the reference's cos_sim: x (Q, d), y (N, d) -> (Q, N)."""
    return (x @ y.t()) / (x.norm(dim=-1)[:, None] * y.norm(dim=-1)[None] + epsilon)


def prototype_centred_loss(logits, query_labels, smoothing=0.1):
    """PAL's prototype-centred term as in the reference: for each class c, the share of the
    sigmoid similarities of prototype c that goes to its own queries,
    Σ_{q ∈ c} σ(y_qc) / (Σ_q σ(y_qc) + 0.1); loss = -mean_c log(share). Classes without a query in
    the episode are skipped (the reference assumes every class has queries)."""
    similarity = torch.sigmoid(logits)  # (Q, N)
    own = F.one_hot(query_labels, logits.shape[1]).to(similarity.dtype)  # (Q, N)
    share = (own * similarity).sum(dim=0) / (similarity.sum(dim=0) + smoothing)  # (N,)
    present = own.sum(dim=0) > 0
    return -torch.log(share[present]).mean()


@register_head("pal")
class PAL(FewShotHead):
    """PAL (Zhu et al., "Few-shot Action Recognition with Prototype-centered Attentive Learning",
    BMVC 2021). Its authors released no code; this follows the re-implementation ``CNN_PAL`` in
    github.com/tobyperrett/few-shot-action-recognition, which we take as the reference.

    clips -> spatial and temporal mean (X, d) -> supports attend to the supports of the episode,
    s' = s + MHA(s, s, s); queries attend to the adapted supports, q' = q + MHA(q, s', s') (one
    single-head attention shared by both, so each query sees only the supports: inductive)
    -> prototypes = class means of s' -> y = τ·cosine(q', prototype) -> loss = cross-entropy(y)
    (query-centred) + λ·prototype-centred term on y (the hybrid loss; λ = 1 as in the reference).

    Deviations:
    - τ = 10 by default; the reference uses the bare cosine (τ = 1, ``temperature=1`` restores
      it). Bare cosines bound the logits to [-1, 1]: 5-way cross-entropy cannot fall below
      log(1 + 4e⁻²) ≈ 0.43, the sigmoid shares stay in (0.27, 0.73), and the gradients on the
      nearly parallel mean-pooled ResNet features are tiny (a fixed episode barely moves in 40
      SGD steps). 10 is the scale tsn-cosine and M3Net start from here.
    - The paper's prototype-centred contrastive loss is a softmax over queries; the reference
      (and this head) uses sigmoid shares with a +0.1 smoothing instead.
    - Clip features are the cached ResNet-50 maps instead of a backbone in the loop.
    - The re-implementation trains with plain SGD, one task per step, 5 queries per class, at lr 1e-4
      x0.1 after 3 000 and 6 000 tasks (run.py, scripts/examples.md: ``--tasks_per_batch 1 -lr 0.0001
      --sch 3000 6000``), τ = 1 and both loss terms means (over queries, over classes):
      ``train-head --preset reference`` (``temperature=1``).
    """

    first_pool = 1  # the spatial mean of every frame comes first

    @settings
    class Config(HeadConfig):
        temperature: float = setting(10.0, "τ on the cosine logits; 1 = the reference's bare cosine (CNN_PAL).",
                                     minimum=0, exclusive=True)
        prototype_loss_weight: float = setting(1.0, "λ of the prototype-centred loss term (the reference's 1).",
                                               minimum=0)

    def __init__(self, config):
        super().__init__(config)
        self.attention = nn.MultiheadAttention(config.feature_dim, num_heads=1, batch_first=True)

    def attend(self, tokens, context):
        """tokens (L, d) attend over context (M, d), residual: -> (L, d)."""
        return tokens + self.attention(tokens[None], context[None], context[None], need_weights=False)[0][0]

    def forward(self, support, support_labels, query):
        support, query = self.cast(support, query)
        n_way = num_classes(support_labels)
        s, q = support.mean(dim=(1, 2, 3)), query.mean(dim=(1, 2, 3))  # (S, d), (Q, d)
        s = self.attend(s, s)
        q = self.attend(q, s)
        prototypes = class_means(s, support_labels, n_way)  # (N, d)
        return {"y": self.config.temperature * cosine_with_margin(q, prototypes)}  # (Q, N)

    def loss(self, outputs, query_labels):
        logits = outputs["y"]
        return (self.cross_entropy(logits, query_labels)  # the prototype-centred term is a mean over classes
                + self.config.prototype_loss_weight * prototype_centred_loss(logits, query_labels))
