"""Loopback plumbing shared by the process packages: picking ports for processes started here
(``ports``), and stopping them when the program that started them gets SIGTERM (``signals``)."""
