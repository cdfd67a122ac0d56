"""clearbench: a multimodal machine-unlearning benchmark in the style of CLEAR."""
__version__ = "0.1.0"
