"""Code that talks to real vendors: one folder per vendor, the shared transport, and the registry."""
