"""The data itself: seed, the audit log and its seals, the change stream, the studio."""
