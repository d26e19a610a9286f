"""Generative (token-level) weak-to-strong: prompt templates, prompt/response tokenization with
loss masks, answer extraction and scoring, and weak-to-strong search over decoders."""
