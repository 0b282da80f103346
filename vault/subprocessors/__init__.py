"""Sub-processors: the registry, the worker's hand-offs, and what a sub-processor may do.

- :mod:`.registry`: the list (admin writes, staff read, everyone sees the public list), and the
  principals bound to an entry.
- :mod:`.rules`: when a recording may go to a sub-processor (one place, used when the job
  claims, when it issues, when the sub-processor redeems and when its transcript comes back).
- :mod:`.transfers`: a hand-off across regions is a transfer, allowed only as the tenant's
  authorisations list it.
- :mod:`.handoffs`: the ``transcription-handoffs`` job (the only way a hand-off is made).
- :mod:`.redeem`: the sub-processor's side: its hand-offs, the token once, the download, the
  transcript.
"""
