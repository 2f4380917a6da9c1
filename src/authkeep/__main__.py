"""``python -m authkeep``."""

from authkeep.cli import main

main()
