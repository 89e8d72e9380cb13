"""Models: each is built from a config dataclass and knows nothing of data files."""
