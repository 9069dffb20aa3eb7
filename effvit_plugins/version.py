"""The version of effvit_plugins, defined here only: ``effvit_plugins.__version__`` re-exports it and setup.py
reads this file without importing the package (so building needs no torch)."""
__version__ = "0.2.0"
