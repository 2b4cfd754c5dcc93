"""minirun: a small, readable, real container runtime."""

__version__ = "0.1.0"
