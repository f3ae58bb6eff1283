"""codex-path-proxy: a transparent, streaming, path-rewriting proxy in front of chatgpt.com."""

# The single source of the version (pyproject reads it): no importlib.metadata at start-up.
__version__ = "0.1.0"
