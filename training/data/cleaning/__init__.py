"""Cleaning steps, each a small function over pandas objects that reports what it changed."""
