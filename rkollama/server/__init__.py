"""The daemon: Flask app, routes per dialect, streaming helpers and the Waitress entry point."""
