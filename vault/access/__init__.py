"""Access: purpose-bound requests, four-eyes reviews, grants, break-glass and revocation."""
