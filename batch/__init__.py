"""Asynchronous batch jobs for the bronze tier (issue 15): hand over a file, get a result file."""
