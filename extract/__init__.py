"""Stage one: decode clips, sample frames, run the ResNet-50 backbone, write the cache."""
