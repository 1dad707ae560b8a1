"""Models, split inference and the edge client. No Qt here (see the import-linter contract)."""
