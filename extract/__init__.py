"""Stage one: decode clips, sample frames, run the ResNet-50 backbone, write the cache.

    video.py        Clip / decode_frames / num_frames: decord, PyAV fallback, frame folders
    sampling.py     sample_indices: TSN segment centres (test) or random within segments (train)
    transforms.py   resize 256x256 + centre / random crop 224 + flip, ImageNet normalisation
    backbone.py     build_backbone: ResNet-50 trunk (torchvision names) with checked weights
    loop.py         ExtractConfig, extract_dataset: DataLoader decode + batched backbone + resumable writes
    distributed.py  the same under torchrun: per-rank shards merged by rank 0
    bench.py        `m3net bench-extract`: decode-only, backbone-only, end-to-end
"""
