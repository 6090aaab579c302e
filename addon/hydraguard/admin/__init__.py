"""The admin listener (`hydraguard run --admin`): metrics, cluster views, health detail and
audit-logged operator overrides, served from inside the proxy process (server.py; the JSON
documents in views.py; the `hydraguard clusters` client in client.py)."""
