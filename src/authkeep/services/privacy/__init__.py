"""Privacy: encryption-key rotation of stored personal data, account deletion and
retention, and the signed export of what is held about a user (docs/privacy.md)."""
