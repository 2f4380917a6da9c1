"""HTTP: the app factory, routers, dependencies, middleware and error mapping."""
