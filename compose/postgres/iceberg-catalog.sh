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
# The role and its database, as every service of the stack with tables of its own gets them.
ROLE_DB="$name" ROLE_DB_PASSWORD_FILE="${ICEBERG_CATALOG_PASSWORD_FILE:?}" sh "$(dirname "$0")/role-database.sh"

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
