"""`python -m mospool`: the operator CLI (see mospool/cli.py)."""

import sys

from mospool.cli import main

sys.exit(main())
