"""`python -m pm_server`: the same as the `pm-server` command."""

from pm_server.cli import main

main()
