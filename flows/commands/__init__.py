"""One module per `modhifi` command; `flows.cli` registers them."""
