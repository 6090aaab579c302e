"""Tools for rule authors: check (summary), explain, policy tests, replay, rule reference.

Pure functions returning data or text; `hydraguard.cli` only parses arguments and prints.
"""
