"""Loopback networking shared by the process packages: picking ports for processes started here."""
