"""nonod: the sandbox daemon. The package's version is here (pyproject.toml reads it), so
``nonoctl --version`` answers without importlib.metadata, which costs the CLI ~15 ms of
imports (email, zipfile, csv...)."""

__version__ = "0.1.0"
