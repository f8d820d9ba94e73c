"""Print the requirements of pyproject.toml (plus the named extras), one per line.

Used by the Dockerfile to install dependencies in a layer of their own, before the source
is copied: `python requirements.py pyproject.toml [extra ...]`.
"""

import sys
import tomllib


def main(pyproject: str, *extras: str) -> None:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        sys.exit(f"unknown extra(s) {', '.join(unknown)}; pyproject.toml has {', '.join(optional)}")
    deps = list(project["dependencies"])
    for extra in extras:
        deps += optional[extra]
    print("\n".join(deps))


if __name__ == "__main__":
    main(*sys.argv[1:])
