"""Deployment files; deploy.local is the local Kafka + PostgreSQL stack (python -m deploy.local)."""
