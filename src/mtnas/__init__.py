"""mtnas: neural architecture search for multi-task dense prediction."""

__version__ = "0.1.0"
