"""A training run: fit models, fit blend weights per segment, evaluate, export."""
