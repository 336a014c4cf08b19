"""SonoNet: speech emotion recognition as a batch job.

Data flows one way: corpus -> audio -> kernels -> features -> shards -> train ->
evaluate -> results. Each stage is one module or package named for what it holds.
"""

__version__ = "0.1.0"
