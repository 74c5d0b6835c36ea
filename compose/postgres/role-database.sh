#!/bin/sh
# One-shot: a login role and a database of the same name that it owns, for a service of the stack
# that keeps its own tables (MLflow's tracking server). Safe to run again: it also resets the role's
# password to the secret's. Connects as the PostgreSQL superuser (PGHOST, PGUSER, PGPASSWORD,
# PGDATABASE); the service gets a role of its own so that it never holds a password of Control
# Room's database, and no other role may connect to its database.
#   ROLE_DB                the role's and the database's name
#   ROLE_DB_PASSWORD_FILE  the role's password (a mounted secret)
set -eu
name="${ROLE_DB:?}"
password="$(cat "${ROLE_DB_PASSWORD_FILE:?}")"
[ -n "$password" ] || { echo "role-database: $ROLE_DB_PASSWORD_FILE is empty" >&2; exit 1; }

psql -X -q -v ON_ERROR_STOP=1 -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'name') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')
\gexec
ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')
\gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT ALL ON DATABASE :"name" TO :"name";
SQL
echo "role-database: database and role $name ready"
