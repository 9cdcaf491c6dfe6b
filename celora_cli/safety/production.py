"""The two words of the production protection, spelled once: the environment name a database is stamped with (or
CELORA_ENV says) and the flag that lifts the refusal. No imports, so the CLI's root can name the flag at start-up."""

PRODUCTION = "production"
OVERRIDE_FLAG = "--allow-production"
