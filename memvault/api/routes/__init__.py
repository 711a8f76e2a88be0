"""HTTP routes grouped by resource; each is a thin translation into one `Vault` call."""
