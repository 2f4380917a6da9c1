"""Pure ASGI middleware (no BaseHTTPMiddleware: it breaks context variables and is slow)."""
