"""Development tools for hydraguard, kept out of the runtime package ``hydraguard``.

- ``hydraguard_dev.upstream``: a stand-in model API upstream (Anthropic Messages, OpenAI Chat
  Completions and Responses; JSON and SSE), ``python -m hydraguard_dev.upstream``;
- ``hydraguard_dev.procs``: real processes on free local ports (the stand-in upstream and
  ``hydraguard run``) with handles for tests, benches and the demo;
- ``hydraguard_dev.demo``: the offline ``hydraguard demo``.

The runtime never imports this package at module level; ``hydraguard demo`` imports it lazily.
"""
