"""Operations: health, metrics, backup and restore, roles."""
