"""`python -m webhook` is the `podpatterns` command."""

import sys

from webhook.cli import main

sys.exit(main())
