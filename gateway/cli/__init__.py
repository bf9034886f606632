"""The `tjg` command line: server commands (serve, simulate, translate, phases) and client commands."""
