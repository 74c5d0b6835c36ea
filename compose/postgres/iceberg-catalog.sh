#!/bin/sh
# One-shot: the Iceberg JDBC catalog's own role and database, and Iceberg's two catalog tables
# (schema V1; Trino's JDBC catalog does not create them). Safe to run again: it also resets the
# role's password to the secret's. Connects as the PostgreSQL superuser (PGHOST, PGUSER,
# PGPASSWORD, PGDATABASE); the catalog gets its own role so that a workspace secret reference to
# its password never reaches Control Room's own database.
#   ICEBERG_CATALOG_DB         the catalog's database and role name
#   ICEBERG_CATALOG_PASSWORD_FILE  the role's password (a mounted secret)
set -eu
name="${ICEBERG_CATALOG_DB:?}"
password="$(cat "${ICEBERG_CATALOG_PASSWORD_FILE:?}")"
[ -n "$password" ] || { echo "iceberg-catalog: $ICEBERG_CATALOG_PASSWORD_FILE is empty" >&2; exit 1; }

psql -X -q -v ON_ERROR_STOP=1 -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'name') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')
\gexec
ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')
\gexec
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL

PGDATABASE="$name" psql -X -q -v ON_ERROR_STOP=1 -v name="$name" <<'SQL'
SET client_min_messages = warning;
SET ROLE :"name";
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name varchar(255) NOT NULL, namespace varchar(255) NOT NULL,
    property_key varchar(255), property_value varchar(1000),
    PRIMARY KEY (catalog_name, namespace, property_key));
CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name varchar(255) NOT NULL, table_namespace varchar(255) NOT NULL, table_name varchar(255) NOT NULL,
    metadata_location varchar(1000), previous_metadata_location varchar(1000), iceberg_type varchar(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name));
SQL
echo "iceberg-catalog: database and role $name ready"
