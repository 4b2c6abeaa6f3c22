"""The store: the one owner of the spool directory's layout.

As CPython's ``mailbox.Maildir`` owns ``tmp/new/cur`` and Postfix's queue code is the only code that builds
queue paths, this package is the only code that spells a folder or file name of the spool. Everything else
asks it by key: ``Spool`` (a postback's way from the receiver to its record folder), ``Records`` (finding,
walking and moving filed records), ``Outbox`` (deliveries per destination), and the record folder's shape
(``Filing``, ``Folder``).
"""

from mospool.store.layout import FILED_STATES, STATES, SUFFIX, State, id_age_seconds, id_day, id_time, new_id
from mospool.store.outbox import Entry, Outbox
from mospool.store.postback import CorruptPostback, Postback, encode
from mospool.store.record import Filing, Folder, Media, Owner, read_folder
from mospool.store.records import Located, NotFound, NotMovable, Records
from mospool.store.spool import Spool, SpoolError

__all__ = [
    "FILED_STATES",
    "STATES",
    "SUFFIX",
    "CorruptPostback",
    "Entry",
    "Filing",
    "Folder",
    "Located",
    "Media",
    "NotFound",
    "NotMovable",
    "Outbox",
    "Owner",
    "Postback",
    "Records",
    "Spool",
    "SpoolError",
    "State",
    "encode",
    "id_age_seconds",
    "id_day",
    "id_time",
    "new_id",
    "read_folder",
]
