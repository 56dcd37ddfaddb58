"""The package version, in the foundation so that every wing (and the page) can name it."""

__version__ = "0.1.0"
