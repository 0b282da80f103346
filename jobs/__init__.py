"""The APScheduler worker and its jobs."""
