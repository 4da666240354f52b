"""`python -m pipeline.benchmark`."""

import sys

from pipeline.benchmark import main

sys.exit(main())
