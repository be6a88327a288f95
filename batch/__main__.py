"""``python -m batch --help``."""

from batch.cli import main

raise SystemExit(main())
