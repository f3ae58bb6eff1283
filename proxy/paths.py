"""Path settings, checked when settings are loaded: a folder the proxy will write in, a
file it will read. Each check returns the reason a path cannot serve, or None; the
caller (proxy.config) names the source and the key.

The checks try what the proxy will later do (create, write, parse) rather than reason
about permission bits: root ignores those, and a read-only or virtual filesystem
(/proc, a container's read-only root) refuses what the bits allow.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path


def folder_problem(path: str) -> str | None:
    """Why `path` cannot be (or become) a folder the proxy writes files in."""
    folder = Path(path)
    verb = "create"
    try:
        if folder.exists():
            if not folder.is_dir():
                return f"{path} is a file, not a folder"
            verb = "write in"
            # A file created and removed at once: what writing a capture needs.
            with tempfile.TemporaryFile(dir=folder):
                return None
        existing = folder.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"cannot create the folder {path}: {existing} is a file"
        # A folder created and removed at once: what creating `path` needs.
        os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as exc:
        return f"cannot {verb} the folder {path}: {exc.strerror or exc}"
    return None


def ca_bundle_problem(path: str) -> str | None:
    """Why `path` is not a readable PEM file of CA certificates."""
    bundle = Path(path)
    if bundle.is_dir():
        return f"{path} is a folder, not a PEM file"
    if not bundle.exists():
        return f"no such file: {path}"
    # A bare context: this loads only the bundle, not the system store.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        return f"{path} holds no usable PEM certificate ({exc.reason or exc})"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None
