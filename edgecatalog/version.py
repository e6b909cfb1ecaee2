"""The package's version: one place, imported by the package and by what describes it."""

__version__ = "0.1.0"
