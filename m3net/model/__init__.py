"""Few-shot heads: M3Net (encoders, matchers, fusion) and baselines, behind one registry."""
