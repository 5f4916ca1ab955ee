"""pm_auth."""

__all__: list[str] = []
