"""Retention: purpose expiry, disposal by crypto-shredding, legal holds and erasure requests."""
