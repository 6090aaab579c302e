"""Request signals: the named observations the rules' `indicators:` section configures.

- `collect`: `SignalCollector`, runs the configured ones for a request;
- `iplists`: CIDR list files (reloaded when they change);
- `ja4`: JA4 TLS client fingerprints, SDK runtime claims;
- `proxy_headers`: proxy and forwarding headers;
- `behaviour`: bounded sliding-window distinct counters and rates;
- `prompts`: named prompt patterns; `templates`: near-duplicate `TemplateMatcher` (MinHash
  + LSH).

Import the module you need (`from hydraguard.signals.templates import TemplateMatcher`): this
package imports none of them, so importing one loads only what it needs.
"""
