"""The routes of the whole API, across every app."""
