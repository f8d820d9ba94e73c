"""``python -m tests.validate_api.colour_cli ARGS``: the ``pictguard`` CLI with the deterministic
colour model (tests/colour_model.py: red is ``flag_nsfw``, magenta ``flag_csam``) registered,
so a real ``pictguard serve`` or ``run classify`` gives known decisions on harmless images."""

from __future__ import annotations

import tests.colour_model  # noqa: F401 — registers the "colour" classifier

if __name__ == "__main__":
    from pictguard.cli import main

    main()
