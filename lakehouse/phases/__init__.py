"""Phase kinds that write lakehouse tables (``runs.kinds`` names each module)."""
