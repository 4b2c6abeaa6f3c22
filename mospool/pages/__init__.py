"""HTML pages for people browsing the spool: one per record, one listing per day, one for the spool root."""

from mospool.pages.views import Pages, rebuild

__all__ = ["Pages", "rebuild"]
