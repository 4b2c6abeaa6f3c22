"""`python -m mospool`: the operator CLI, as the `mospool` command (see mospool/cli/)."""

import sys

from mospool.cli import main

sys.exit(main())
