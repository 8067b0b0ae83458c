"""The `rft` command-line client."""
