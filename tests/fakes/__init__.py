"""Fakes of the systems pictguard integrates with but that cannot run here (pict-rs, Lemmy,
Mastodon, HMA 2.0): real HTTP servers on loopback that follow the upstream sources.
See docs/fakes.md for what each one implements and leaves out."""

from tests.fakes.hma import FakeHMA
from tests.fakes.lemmy import FakeLemmy
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.pictrs import FakePictrs, FilesystemStore, S3Store
from tests.fakes.recorder import RecordingEndpoint

__all__ = [
    "FakeHMA",
    "FakeLemmy",
    "FakeMastodon",
    "FakePictrs",
    "FilesystemStore",
    "RecordingEndpoint",
    "S3Store",
]
