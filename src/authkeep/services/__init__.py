"""Use cases: register, login, refresh, logout, ... They raise domain errors
(``authkeep.errors``) and never import FastAPI, so tests reach every rule without HTTP."""
