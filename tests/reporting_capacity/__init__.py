"""The capacity report: each metric on tiny hand-made runs, the targets' verdicts, and one pass
over a trimmed real run (``fixtures/``: every 5th request of a 4-fleet run dilated x40, the
timeline trimmed to the fields the report reads)."""
