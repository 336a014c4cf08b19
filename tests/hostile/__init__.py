"""The standing adversarial suite: hostile inputs for every entry point (see builders.py)."""
