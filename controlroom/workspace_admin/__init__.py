"""Workspace admin pages inside the app (not the Django admin): members, the audit log and
the workspace's settings, under ``/w/<workspace>/settings/``. Admins only."""
