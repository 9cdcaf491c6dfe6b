"""Seeding: the Celora fixtures and Faker-generated volume."""
