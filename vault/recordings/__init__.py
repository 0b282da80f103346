"""Recordings: ingest, metadata, playback, the integrity scrub and the orphan sweeper."""
