"""The lakehouse: catalogs, Iceberg and Delta tables, their versions and lineage."""
