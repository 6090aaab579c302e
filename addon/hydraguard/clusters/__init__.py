"""Cluster inference: which budget cluster a request belongs to and which accounts act as
one operator (hydra linking).

- keys.py: cluster keys and linked-cluster ids;
- resolve.py: the cluster of a request (first matching definition, key attributes);
- linker.py: the in-process union-find of accounts linked by combined shared evidence;
- link_state.py: its compact evidence members and union-find;
- scoring.py: pair scores (weights, rarity, multi-exit add-up) and why-records;
- links.py: the link-store interface and its memory implementation;
- redis_links.py + link_script.py: the same shared by replicas through Redis.
"""

from .keys import CLUSTER_KEY_ATTRS, cluster_id, cluster_key
from .linker import DEFAULT_LINK_RULES, ClusterLinker, LinkRule
from .links import LinkStore, MemoryLinks
from .resolve import ClusterResolver, evidence_of, flagged_of

__all__ = [
    "CLUSTER_KEY_ATTRS",
    "DEFAULT_LINK_RULES",
    "ClusterLinker",
    "ClusterResolver",
    "LinkRule",
    "LinkStore",
    "MemoryLinks",
    "cluster_id",
    "cluster_key",
    "evidence_of",
    "flagged_of",
]
