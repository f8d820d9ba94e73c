"""pictguard's composition root: the CLI, the runtime, the combined settings and the registry
of roles. The only package that imports every role; nothing imports it but entry points."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pictguard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
