"""``python -m pictguard``: the same as the ``pictguard`` command."""

from pictguard.cli import main

main()
