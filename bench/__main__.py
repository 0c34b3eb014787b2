"""`python3 -m bench`: the admission benchmark (bench/run.py)."""

import sys

from bench.run import main

sys.exit(main())
