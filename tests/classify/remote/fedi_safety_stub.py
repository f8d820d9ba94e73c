"""A stand-in for an existing fedi-safety worker, written from its source (db0/fedi-safety:
``lemmy_safety_pictrs.py`` and ``fedi_safety/pictrs_safety.py``), so a test can check that
such a worker classifies for pictguard unchanged.

What it does, as the original does: every 0.1 s it hands one ``pop_and_check`` to a thread
pool; that GETs ``/api/v1/pop`` with the ``apikey`` header and a 2 s timeout, logs a
non-OK answer, does nothing on 204, and on 200 takes the file name from
``Content-Disposition`` split on its first ``=``, opens the bytes with Pillow, and POSTs
``{"image": name, "is_csam": verdict, "is_nsfw": verdict}`` (it sets both from its one CSAM
check). The original uses ``requests``; this uses httpx's synchronous client, which sends
the same requests. Its CLIP check is replaced by a deterministic colour rule.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image


def magenta(image: Image.Image) -> bool:
    """The stand-in check: a mostly red-and-blue picture counts as CSAM (harmless images
    washed in magenta, see tests/classify/remote/media.py)."""
    r, _, b = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    return bool(r > 200 and b > 200)


class FediSafetyStub:
    """Polls a pictrs-safety-compatible server like fedi-safety's worker does."""

    def __init__(
        self,
        url: str,
        apikey: str,
        check: Callable[[Image.Image], bool] = magenta,
        threads: int = 10,
    ) -> None:
        self.url = url
        self.headers = {"apikey": apikey}
        self.check = check
        self.threads = threads
        self.should_stop = False
        self.submitted: list[tuple[str, bool, int]] = []  # (name, is_csam, status)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def pop_and_check(self) -> None:
        try:
            response = httpx.get(f"{self.url}/api/v1/pop", headers=self.headers, timeout=2)
            if not response.is_success:
                self._error(f"{response.status_code}: {response.json()}")
                return
            if response.status_code == 200:
                if "Content-Disposition" not in response.headers:
                    self._error("Filename not found in headers")
                    return
                filename = response.headers["Content-Disposition"].split("=", 1)[1]
                image = Image.open(io.BytesIO(response.content))
            elif response.status_code == 204:
                return
            else:
                self._error(f"Failed to retrieve the image. Status code: {response.status_code}")
                return
            is_csam = self.check(image)
            payload = {"image": filename, "is_csam": is_csam, "is_nsfw": is_csam}
            answer = httpx.post(f"{self.url}/api/v1/pop", headers=self.headers, json=payload)
            with self._lock:
                self.submitted.append((filename, is_csam, answer.status_code))
        except Exception as err:  # noqa: BLE001 — the original logs and goes on
            self._error(f"Exception: {err}")

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def _poll(self) -> None:
        with ThreadPoolExecutor(max_workers=self.threads) as executor:
            while not self.should_stop:
                executor.submit(self.pop_and_check)
                time.sleep(0.1)

    def start(self) -> FediSafetyStub:
        self._thread = threading.Thread(target=self._poll, name="fedi-safety", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.should_stop = True
        if self._thread is not None:
            self._thread.join(30)
