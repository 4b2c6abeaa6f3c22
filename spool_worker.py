"""The spool worker's entry point (in progress: parsing and filing land with the worker issue)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    sys.exit("mo-spool worker: not built yet")
