"""The HDF5 feature cache (schema in DESIGN.md)."""
