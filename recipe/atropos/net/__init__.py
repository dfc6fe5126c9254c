"""Addresses and HTTP between the run's own processes, across nodes."""
