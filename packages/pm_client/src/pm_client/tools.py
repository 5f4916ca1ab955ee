"""Command-line tools."""


def mint_token_main() -> None:
    """Mint a token."""


def listen_main() -> None:
    """Listen."""
