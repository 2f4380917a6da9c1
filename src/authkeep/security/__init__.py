"""Security primitives: emails, passwords, tokens and signing keys.

Nothing here imports the database, the services or FastAPI.
"""
