"""One module per CLI command; `client.cli` registers them."""
