"""pm_ws."""

__all__: list[str] = []
