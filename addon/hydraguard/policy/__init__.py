"""Rules: YAML -> validated, immutable `Policy` (errors carry file:line:column)."""

from .load import PolicyError, load_policy, parse_policy
from .model import LogSettings, Policy, Rule, Settings

__all__ = [
    "LogSettings", "Policy", "PolicyError", "Rule", "Settings", "load_policy", "parse_policy",
]
