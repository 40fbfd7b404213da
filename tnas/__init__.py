"""tnas: neural architecture search and design spaces for transformer-family models."""

__version__ = "0.1.0"
