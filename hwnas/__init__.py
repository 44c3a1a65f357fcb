"""hwnas: hardware-aware neural architecture search for mobile models."""

__version__ = "0.1.0"
