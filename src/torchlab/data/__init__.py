"""Data: find files on disk, validate and decode them, serve them as tensors."""
