"""w2s: weak-to-strong generalization and self-training in JAX."""
__version__ = "0.1.0"
