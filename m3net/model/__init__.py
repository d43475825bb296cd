"""Few-shot heads: M3Net (encoders, matchers, fusion) and baselines, behind one registry."""
from m3net.model.registry import HEADS, FewShotHead, build_head, list_heads, register_head

__all__ = ["HEADS", "FewShotHead", "build_head", "list_heads", "register_head"]
