"""End to end on a real 3-master Redis Cluster: two `hydraguard run --admin` replicas with
`state: {backend: redis, cluster: true}` link a scripted hydra (accounts sharing a flagged
exit) through the sharded layout (clusters/link_shards.py), and each replica's admin listener
reads that layout, every read on the master of its key's slot (clusters/view.py)."""

from __future__ import annotations

import uuid

import pytest

from hydraguard.budgets.redis_state import LAYOUT_VERSION
from hydraguard_dev.procs import proxy

from .redis_cluster_util import running_cluster
from .test_e2e_admin import EXITS, acct, acct_cluster, call, scrape, template_of, value
from .test_e2e_admin_redis import RULES

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

CLUSTER_RULES = RULES.replace("replicas: 2}}", "replicas: 2, cluster: true}}")


@pytest.fixture(scope="module")
def replicas(stub, tmp_path_factory):
    assert CLUSTER_RULES != RULES
    with running_cluster() as cluster:
        rules = tmp_path_factory.mktemp("admin-rcluster") / "rules.yaml"
        rules.write_text(CLUSTER_RULES.format(url=cluster.url, prefix="hgac"))
        (rules.parent / "exits.txt").write_text(EXITS)
        with proxy(stub.url, rules, admin=True) as a, proxy(stub.url, rules, admin=True) as b:
            yield cluster, a, b


def test_each_replica_shows_the_shared_clusters_on_the_cluster(replicas):
    cluster, a, b = replicas
    exit_ip = "198.51.100.40"
    keys = [f"sk-rch-{uuid.uuid4().hex[:10]}-{i}" for i in range(5)]
    for i, k in enumerate(keys):
        call((a, b)[i % 2], k, ip=exit_ip)
    members = [acct(k) for k in keys]
    cid = acct_cluster(members[0])  # the first seen names the shared cluster
    tpl = template_of(a, keys[0])
    # the evidence sets are spread: on more than one master
    held = cluster.masters_holding(f"hgac:v{LAYOUT_VERSION}:{{links:*:e:*")
    assert sum(held.values()) >= 2 and sum(1 for n in held.values() if n) >= 2
    for p in (a, b):
        status, top = p.admin("GET", "/clusters?top=10")
        assert status == 200
        (mine,) = [c for c in top["clusters"] if c["id"] == cid]
        assert (mine["members"], mine["evidence"], mine["tokens"], mine["shared"]) == (
            5, {"ip": 1, "template": 1}, 80, True)
        assert mine["budgets"][0]["windows"][0]["used"] == 80
        status, doc = p.admin("GET", f"/clusters/{cid}")
        assert status == 200 and doc["members"] == members
        assert [(e["kind"], e["value"], e["accounts"]) for e in doc["evidence"]] == [
            ("ip", exit_ip, 5), ("template", tpl, 5)]
        status, why = p.admin("GET", f"/accounts/{members[3]}")
        assert status == 200
        (link,) = why["links"]
        assert (link["cluster"], link["size"], link["shared"]) == (cid, 5, True)
        assert [(e["kind"], e["value"], e["linking"]) for e in link["evidence"]] == [
            ("ip", exit_ip, True), ("template", tpl, True)]
        assert {k: v for k, v in link["link"].items() if k != "age_s"} == {
            "members": 5, "score": 1.4, "kinds": {"ip": 1, "template": 1}, "flagged": True,
            "via": members[2]}
        m = scrape(p)
        assert value(m, "hydraguard_state_up", backend="redis") == 1
        assert value(m, "hydraguard_state_roundtrip_seconds_count", result="ok") > 0
        assert value(m, "hydraguard_clusters", definition="linked") == 1
