"""SonoNet's version, stamped into every saved model and label file; ``sononet.__version__`` re-exports it.

Its own module, so the stages that record it import neither the package root nor, through the
root's type-only imports, the API.
"""

__version__ = "0.1.0"
