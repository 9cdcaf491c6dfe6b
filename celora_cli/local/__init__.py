"""The local PostgreSQL celora manages, its binaries, the PgBouncer in front of it, and files written as root where the
server's user could plant links."""
