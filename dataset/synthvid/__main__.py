"""Entry point of ``python -m dataset.synthvid`` (see :mod:`dataset.synthvid.cli`)."""
import sys

from dataset.synthvid.cli import main

sys.exit(main())
