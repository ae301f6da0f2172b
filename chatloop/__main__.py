"""`python -m chatloop` runs the CLI (same as the `chatloop` script)."""

from chatloop.cli import main

main()
