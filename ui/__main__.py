"""Allow `python -m diffagent.ui`."""

import sys

from diffagent.ui.cli import main

sys.exit(main())
