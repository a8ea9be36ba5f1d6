"""Wire-level fakes of external servers that cannot run on the test machines (see ARCHITECTURE.md)."""
