"""Code that the SQLite tests run in child processes (importable under ``spawn``)."""
