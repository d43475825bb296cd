"""Few-shot heads: M3Net (encoders, matchers, fusion) and baselines, behind one registry."""
from m3net.model.base import FewShotHead
from m3net.model.registry import HEADS, build_head, list_heads, register_head

# Imported for their @register_head side effect.
from m3net.model import baselines, hyrsm, m3net_head, pal, strm  # noqa: E402,F401  isort:skip

__all__ = ["HEADS", "FewShotHead", "build_head", "list_heads", "register_head"]
