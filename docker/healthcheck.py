"""Docker HEALTHCHECK for every pictguard role (Kubernetes uses the chart's probes instead).

Healthy when one of the role's HTTP servers answers 200 on /healthz: the API
(PICTGUARD_API__PORT, 8080), the metrics server of ingest/classify/enforce
(PICTGUARD_METRICS__PORT; unset, each role's own: 9101, 9102, 9103) or the ingest webhook
receiver (PICTGUARD_INGEST__WEBHOOK__PORT, 8081).
PICTGUARD_HEALTHCHECK_URL overrides the guess.
"""

import os
import sys
import urllib.request


def candidates() -> list[str]:
    explicit = os.environ.get("PICTGUARD_HEALTHCHECK_URL")
    if explicit:
        return [explicit]
    metrics = os.environ.get("PICTGUARD_METRICS__PORT")
    ports = [
        os.environ.get("PICTGUARD_API__PORT", "8080"),
        *([metrics] if metrics else ["9101", "9102", "9103"]),
        os.environ.get("PICTGUARD_INGEST__WEBHOOK__PORT", "8081"),
    ]
    return [f"http://127.0.0.1:{port}/healthz" for port in ports]


def main() -> int:
    for url in candidates():
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (local URL)
                if response.status == 200:
                    return 0
        except OSError:
            continue
    print("no pictguard health endpoint answered: " + ", ".join(candidates()), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
