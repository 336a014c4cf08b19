"""Features: log-mel on the torch device, and the Parquet shards that hold them.

``mel`` builds the log-mel front-end (nnAudio on the GPU, torchaudio on the CPU, same
numbers); ``shards`` writes and verifies Parquet tensor shards; ``reader`` streams them
back as torch batches.
"""

from sononet.features.mel import FeatureConfig, LogMel, pick_backend, power_to_db

__all__ = ["FeatureConfig", "LogMel", "pick_backend", "power_to_db"]
