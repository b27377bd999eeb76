"""The annotation store, the web app over it (FastAPI), agreement metrics and the export. Imports no torch."""
