"""Launchers for real PostgreSQL, SeaweedFS and OpenBao processes, and the whole dev stack.

``callvault dev-stack`` and the test suite's fixtures both start their servers through these
modules, so the launch code lives once: :mod:`.postgres`, :mod:`.weed`, :mod:`.bao` (each a
context manager that stops its server by PID), :mod:`.stack` (the production topology on one
machine) and :mod:`.procs` (ports, waiting, stopping).
"""
