"""M3Net's three context encoders (paper §3.3): IFCE (spatial), IVCE (temporal), IECE (episode)."""
import torch
import torch.nn.functional as F
from torch import nn


def pool_positions(maps, grid):
    """Adaptive average pooling of maps (..., H, W, d) to (..., n, n, d) with n = ``grid``.

    Each output is a weighted mean of input positions (weights summing to 1), so it commutes with
    any per-position affine map of the channels (standardisation, a linear projection): pooling first
    is exact and cheaper.
    """
    *lead, height, width, dim = maps.shape
    if (height, width) == (grid, grid):
        return maps
    x = maps.reshape(-1, height, width, dim).permute(0, 3, 1, 2)  # (·, d, H, W)
    return F.adaptive_avg_pool2d(x, grid).permute(0, 2, 3, 1).reshape(*lead, grid, grid, dim)


def _positional_embedding(tokens, dim):
    return nn.Parameter(torch.randn(tokens, dim) * 0.02)


class IFCE(nn.Module):
    """Intra-frame context encoding (Eq. 1): patch attention inside each frame.

    (X, T, H, W, d) maps -> adaptive average pool to n×n -> P = n² tokens + learned pos-emb (P, d)
    -> Ẑ = α·softmax(Z W_Q (Z W_K)ᵀ / √d) Z W_V + Z (single head, α learnable, init 1)
    -> f' = MLP(Ẑ) + Ẑ, MLP = three d→d linears separated by two ReLUs. Output (X, T, P, d).
    """

    def __init__(self, dim, grid=4):
        super().__init__()
        self.grid = grid
        self.pos = _positional_embedding(grid * grid, dim)  # (P, d)
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.alpha = nn.Parameter(torch.ones(()))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, maps):
        clips, frames, _, _, dim = maps.shape
        patches = pool_positions(maps, self.grid).reshape(clips * frames, self.grid * self.grid, dim)  # (X·T, P, d)
        z = patches + self.pos
        attention = torch.softmax(self.w_q(z) @ self.w_k(z).transpose(1, 2) / dim ** 0.5, dim=-1)  # (X·T, P, P)
        z = self.alpha * attention @ self.w_v(z) + z
        z = self.mlp(z) + z
        return z.reshape(clips, frames, self.grid * self.grid, dim)  # (X, T, P, d)


class ChannelMixing(nn.Module):
    """d→d, ReLU, d→d on every token, plus residual (the channel perception layer of Eq. 2)."""

    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x):
        return self.mlp(x) + x


class IVCE(nn.Module):
    """Intra-video context encoding (Eq. 2): a frame-mixing block over the T frame tokens.

    (X, T, P, d) -> spatial mean (X, T, d) + learned pos-emb (T, d) -> token mixing
    (T→T, ReLU, T→T on the transposed table, residual) -> channel mixing (residual). Output (X, T, d).
    The T×T layers fix the clip length to ``frames``.
    """

    def __init__(self, dim, frames):
        super().__init__()
        self.frames = frames
        self.pos = _positional_embedding(frames, dim)  # (T, d)
        self.token_mixing = nn.Sequential(nn.Linear(frames, frames), nn.ReLU(), nn.Linear(frames, frames))
        self.channel_mixing = ChannelMixing(dim)

    def forward(self, patches):
        if patches.shape[1] != self.frames:
            raise ValueError(f"IVCE: clips have {patches.shape[1]} frames but the head was built with "
                             f"num_frames={self.frames} (its T×T frame-mixing layers fix T)")
        v = patches.mean(dim=2) + self.pos  # (X, T, d)
        v = self.token_mixing(v.transpose(1, 2)).transpose(1, 2) + v
        return self.channel_mixing(v)  # (X, T, d)


class SetTokenMixing(nn.Module):
    """Token mixing over a set of any size L: out_l = λ ⊙ x_l + γ ⊙ mean_set(x) + β.

    The paper's video-mixing block uses an L×L token-mixing matrix, which fixes the episode size
    and would let a clip's output depend on its position in the episode. The linear maps of R^L
    that commute with every permutation of the L tokens are exactly a·I + b·11ᵀ (Zaheer et al.,
    "Deep Sets", 2017); we take that family with b scaled by 1/L (a mean, so its size does not
    change with L) and per-channel a, b. It is defined for every L — training with 5 queries
    per class and testing with 1 uses the same weights — and it matches the paper's remark that
    the video tokens are unordered (hence no pos-emb in IECE).
    """

    def __init__(self, dim):
        super().__init__()
        # Per channel this is a linear map of the two inputs (x_l, mean): nn.Linear(2, 1)'s init.
        bound = 2 ** -0.5
        self.self_weight = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.set_weight = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))

    def forward(self, tokens):  # (G, L, d): G independent sets of L tokens
        return self.self_weight * tokens + self.set_weight * tokens.mean(dim=1, keepdim=True) + self.bias


class IECE(nn.Module):
    """Intra-episode context encoding (§3.3.3): task-specific frame features.

    E (clips, T, d) -> video tokens Ê = temporal mean (no pos-emb) -> video-mixing block
    (set token mixing, ReLU, set token mixing, residual; channel mixing, residual) -> per-clip meta
    weights m (d,) -> E' = E + DWConv_t(E ⊙ σ(LayerNorm(m))).

    Choices the paper leaves open, and why:
    - Which clips form the set. Default (inductive): for each query, its set is the S supports
      plus that query alone (L = S + 1), so a query's prediction never depends on the other
      queries of the episode (and equals the paper's episode whenever it holds one query); the
      supports are therefore re-encoded once per query: outputs are (Q, S, T, d) for the
      supports. ``transductive=True``: one set of all S + Q clips, supports shared: (1, S, T, d).
    - "Meta weights modulate E through a learnable convolution": the block's output for a clip
      becomes channel gates σ(LayerNorm(m)) on that clip's frames, and a learnable depthwise
      temporal convolution (kernel 3, one filter per channel) turns the gated frames into a
      residual update. The LayerNorm makes the gates independent of the feature scale (m
      carries the features' scale through its residuals: ~0.5 for ImageNet ResNet maps, ~10 for
      random-weight ones, where a plain sigmoid would saturate and pass no gradient); the
      sigmoid keeps them in (0, 1); the depthwise
      kernel adds neighbouring-frame context at d·3 weights instead of d²·3; the residual keeps
      the frame identity that T-M's nearest-frame matching relies on.
    """

    def __init__(self, dim, transductive=False):
        super().__init__()
        self.transductive = transductive
        self.token_mixing = nn.Sequential(SetTokenMixing(dim), nn.ReLU(), SetTokenMixing(dim))
        self.channel_mixing = ChannelMixing(dim)
        self.meta_norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def mix(self, tokens):  # (G, L, d) -> meta weights (G, L, d)
        tokens = self.token_mixing(tokens) + tokens
        return self.channel_mixing(tokens)

    def modulate(self, frames, meta):  # frames (..., T, d), meta (..., d) -> (..., T, d)
        gated = frames * torch.sigmoid(self.meta_norm(meta)).unsqueeze(-2)
        lead, (length, dim) = gated.shape[:-2], gated.shape[-2:]
        update = self.conv(gated.reshape(-1, length, dim).transpose(1, 2)).transpose(1, 2)
        return frames + update.reshape(*lead, length, dim)

    def forward(self, support, query):
        """support (S, T, d), query (Q, T, d) -> support (G, S, T, d) with G = Q (inductive) or 1, query (Q, T, d)."""
        s_tokens, q_tokens = support.mean(dim=1), query.mean(dim=1)  # (S, d), (Q, d)
        n_support, n_query = s_tokens.shape[0], q_tokens.shape[0]
        if self.transductive:
            meta = self.mix(torch.cat([s_tokens, q_tokens])[None])[0]  # (S+Q, d)
            s_meta, q_meta = meta[None, :n_support], meta[n_support:]  # (1, S, d), (Q, d)
        else:
            sets = torch.cat([s_tokens.expand(n_query, -1, -1), q_tokens[:, None]], dim=1)  # (Q, S+1, d)
            meta = self.mix(sets)
            s_meta, q_meta = meta[:, :n_support], meta[:, n_support]  # (Q, S, d), (Q, d)
        return self.modulate(support[None], s_meta), self.modulate(query, q_meta)


class TrainingChannelStatistics(nn.Module):
    """Per-channel centring (and optionally scaling) of the cached maps with training-split statistics.

    Random-weight ResNet-50 maps share one large positive direction: every frame's feature is
    nearly collinear with every other's (cosine costs ~1e-3), so the matchers' distances barely
    differ between classes and their softmaxes start flat. Subtracting the channel means of the
    training clips removes that shared direction (ImageNet maps gain less, but lose nothing).

    The statistics are a running sum over every map the head sees in training mode (all of them
    training-split clips), frozen in eval mode, and kept as buffers: a checkpoint carries them,
    and a resumed run continues them exactly. An untrained head (no statistics yet) passes its
    input through. ``scale=True`` also divides by the channel standard deviation.
    """

    def __init__(self, channels, scale=False, eps=1e-5):
        super().__init__()
        self.scale, self.eps = scale, eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("total_squares", torch.zeros(channels, dtype=torch.float64))

    @torch.no_grad()
    def update(self, maps):
        values = maps.detach().reshape(-1, maps.shape[-1])  # (X·T·H·W, C)
        self.count += values.shape[0]
        # one episode's sums are exact enough in float32; the running totals are float64
        self.total += values.sum(dim=0).double()
        self.total_squares += values.pow(2).sum(dim=0).double()

    def forward(self, maps):  # (..., C) -> (..., C)
        if self.training:
            self.update(maps)
        return self.apply_statistics(maps)

    def apply_statistics(self, maps):  # (..., C) -> (..., C), without updating the statistics
        if self.count == 0:
            return maps
        mean = self.total / self.count
        centred = maps - mean.to(maps.dtype)
        if not self.scale:
            return centred
        variance = (self.total_squares / self.count - mean.pow(2)).clamp(min=0)
        return centred / (variance + self.eps).sqrt().to(maps.dtype)
