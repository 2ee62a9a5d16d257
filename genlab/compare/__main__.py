"""``python -m genlab.compare``."""

import sys

from genlab.compare.cli import main

sys.exit(main())
