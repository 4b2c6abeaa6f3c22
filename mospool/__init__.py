"""mo-spool: receive Sinch MMS/SMS postbacks, spool them durably, and file each one as a readable record."""
