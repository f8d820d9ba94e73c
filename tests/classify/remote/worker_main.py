"""``python -m tests.classify.remote.worker_main ARGS``: the ``pictguard`` CLI with the test
colour model registered, for remote worker subprocesses.

With ``PICTGUARD_TEST_HANG=1`` the model never returns: the worker leases a batch and
stalls on it, as a worker whose GPU hangs would (the test then kills it mid-lease).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from classify.registry import ModelOutput
from tests.colour_model import ColourModel


class HangingColourModel(ColourModel):
    def predict(self, batch: Sequence[np.ndarray]) -> list[ModelOutput]:
        threading.Event().wait()  # forever: the process is killed from outside
        return []


if os.environ.get("PICTGUARD_TEST_HANG") == "1":
    HangingColourModel.register()
else:
    ColourModel.register()

if __name__ == "__main__":
    from pictguard.cli import main

    main()
