"""codex-path-proxy: a transparent, streaming, path-rewriting proxy in front of chatgpt.com."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("codex-path-proxy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
