"""pm_server."""

__all__: list[str] = []
