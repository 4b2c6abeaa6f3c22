"""Outputs: what follows from each filed record. The built-in ones, each one module that registers itself:

- ``pages``: an HTML page per record and the day and front pages, for people browsing the spool;
- ``webhooks``: each filed message POSTed, signed, to the business's application, through the generic
  delivery engine (``delivery``: a durable outbox per destination, retries, parking, redelivery).

``registry`` is the list they join; another output is one more module that calls ``register``.
"""

from mospool.outputs import pages, webhooks
from mospool.outputs.registry import (
    BaseOutput,
    Context,
    Spec,
    StatusPart,
    build_outputs,
    outboxes,
    register,
    registered,
    status_parts,
    unregister,
)

__all__ = [
    "BaseOutput",
    "Context",
    "Spec",
    "StatusPart",
    "build_outputs",
    "outboxes",
    "pages",
    "register",
    "registered",
    "status_parts",
    "unregister",
    "webhooks",
]
