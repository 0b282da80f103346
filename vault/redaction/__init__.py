"""Redaction: verified de-identified derivatives, with lineage and a signed manifest."""
