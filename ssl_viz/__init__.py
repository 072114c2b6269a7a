"""ssl-viz: train, load and look inside contrastive self-supervised encoders."""

__version__ = "0.1.0"
