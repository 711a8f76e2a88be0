"""memvault benchmarks: `make bench` (or `python -m benchmarks [NAME ...]`) runs them."""
