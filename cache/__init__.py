"""The HDF5 feature cache (schema in schema.py and docs/design.md): resumable writer, in-RAM reader."""
from m3net.cache.reader import CachedFeatures, PrefetchingReader, RowReader, cache_info, format_cache_info, load_cache
from m3net.cache.schema import PROVENANCE_KEYS, SCHEMA_VERSION, SPLITS, CacheError, ProvenanceError, check_provenance
from m3net.cache.stats import (
    ChannelStatistics,
    channel_statistics,
    compute_channel_statistics,
    read_channel_statistics,
    write_channel_statistics,
)
from m3net.cache.writer import CacheWriter, write_cache_arrays

__all__ = [
    "CacheWriter", "CachedFeatures", "ChannelStatistics", "channel_statistics", "compute_channel_statistics",
    "read_channel_statistics", "write_channel_statistics", "PrefetchingReader", "RowReader", "CacheError",
    "ProvenanceError",
    "PROVENANCE_KEYS", "SCHEMA_VERSION", "SPLITS", "cache_info", "format_cache_info", "check_provenance", "load_cache",
    "write_cache_arrays",
]
