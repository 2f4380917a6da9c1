#!/usr/bin/env bash
# Creates authkeep's three PostgreSQL roles and its database, run once by the postgres image
# on first start (docker-entrypoint-initdb.d) as the superuser. Outside containers, run the
# same statements as a DBA. Passwords come from the environment, never from this file.
#   authkeep_owner          owns the schema; `authkeep migrate` logs in as it
#   authkeep_app            what the service logs in as: no superuser, no BYPASSRLS, so
#                           row-level security and the audit log's triggers bind it
#   authkeep_audit_purger   only `authkeep audit purge` (retention) logs in as it
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$AUTHKEEP_OWNER_DB_PASSWORD" \
  -v app_pw="$AUTHKEEP_APP_DB_PASSWORD" \
  -v purge_pw="$AUTHKEEP_PURGE_DB_PASSWORD" <<'SQL'
CREATE ROLE authkeep_owner LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'owner_pw';
CREATE ROLE authkeep_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
CREATE ROLE authkeep_audit_purger LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'purge_pw';
CREATE DATABASE authkeep OWNER authkeep_owner;
\c authkeep
GRANT CREATE ON SCHEMA public TO authkeep_owner;
SQL
