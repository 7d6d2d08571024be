"""Use cases that own their transactions and sit between the pages and ``core`` / ``db``:
``archive`` (a PACS query scored by every chosen model on Ray, resumably; docs/archive.md)."""
