"""Operations: what ``/metrics`` reports (read from the database at scrape time, so every
replica answers the same), the job-run records it reads, and the roll-ups that keep it cheap."""
