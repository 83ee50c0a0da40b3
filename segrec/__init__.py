"""segrec: segment-aware product recommendations.

The ``segrec`` package holds what training and serving share: settings, the command
line, pseudonymisation. It imports no training-only library.
"""

__version__ = "0.1.0"
