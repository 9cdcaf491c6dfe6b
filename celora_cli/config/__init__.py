"""Settings and database URLs: where every setting comes from, parsed and masked once."""
