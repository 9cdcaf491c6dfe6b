"""Everything that talks to PostgreSQL: the engine factory, retries, error translation and the models."""
