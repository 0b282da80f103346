"""Envelope encryption for callvault.

Public surface: the recipes ``crypto.streaming`` and ``crypto.envelope``, the key providers in
``crypto.keys`` and the errors in ``crypto.errors``. Everything prefixed with an underscore is a
primitive and private to this package. Nothing here does I/O to S3 or a database.
"""
