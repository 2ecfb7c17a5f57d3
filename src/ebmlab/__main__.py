"""``python -m ebmlab`` is the ``ebmlab`` command (torchrun uses this entry point)."""
import sys

from ebmlab.cli import main

sys.exit(main())
