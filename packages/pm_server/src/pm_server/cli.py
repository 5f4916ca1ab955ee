"""The pm-server command line."""


def main() -> None:
    """Run the gateway."""
    raise SystemExit("pm-server: coming")
