"""plmlens: what protein language models learn, through attention and hidden states, measured against
protein structure and function."""

__version__ = "0.1.0"
