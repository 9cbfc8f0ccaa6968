"""Offline tools over OTLP files: test a rule, score past traces, explain decisions, report."""
