"""The review console at ``/console``: server-rendered pages over the same services as the API.

Sessions (:mod:`vault.console.sessions`) exchange an API key for an opaque cookie scoped to
``/console``; every page re-checks the principal and goes through the one authorization layer.
"""
