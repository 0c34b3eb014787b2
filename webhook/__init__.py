"""podpatterns: a mutating admission webhook that injects multi-container pod patterns from annotations."""

__version__ = "0.1.0"
