"""`hydraguard run` checks its configuration before it starts mitmdump.

Each check returns the value to use or raises `ConfigError` with one line that says what is
wrong and how to fix it; the command line prints it and exits with status 2.
"""

from __future__ import annotations

import errno
import socket
import urllib.parse

DEFAULT_HOST = "127.0.0.1"


class ConfigError(Exception):
    """A configuration problem, stated in one line."""


def parse_listen(value: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; without a host: loopback (127.0.0.1).
    Listening on every interface takes an explicit ``0.0.0.0:PORT`` (or ``[::]:PORT``)."""
    text = value.strip()
    if text.isdigit():
        host, port = "", text
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--listen wants PORT or HOST:PORT, got {value!r}")
        if host.startswith("["):
            if not host.endswith("]"):
                raise ConfigError(f"--listen: unbalanced brackets in {value!r}")
            host = host[1:-1]
        elif ":" in host:
            raise ConfigError(f"--listen: write an IPv6 address in brackets, e.g. "
                              f"[{host}]:{port}")
    n = int(port)
    if not 0 <= n <= 65535:
        raise ConfigError(f"--listen: port {n} is not between 0 and 65535")
    return host or DEFAULT_HOST, n


def parse_upstream(value: str) -> str:
    """``http(s)://HOST[:PORT]``: the scheme is required (never guessed) and no path is
    taken: clients' request paths (``/v1/messages``, ``/v1/chat/completions``) are forwarded
    as they are, so ``https://api.openai.com/v1`` would not mean what it seems."""
    text = value.strip()
    if "://" not in text:
        raise ConfigError(f"--upstream {value!r} has no scheme: write https://{text} or "
                          f"http://{text} (hydraguard does not guess)")
    u = urllib.parse.urlsplit(text)
    if u.scheme not in ("http", "https"):
        raise ConfigError(f"--upstream {value!r}: the scheme must be http or https")
    try:
        port = u.port
    except ValueError:
        raise ConfigError(f"--upstream {value!r}: the port is not a number between 0 and "
                          "65535") from None
    if not u.hostname:
        raise ConfigError(f"--upstream {value!r} names no host")
    if u.username or u.password:
        raise ConfigError(f"--upstream {value!r}: credentials in the URL are not supported")
    base = f"{u.scheme}://{u.netloc}"
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ConfigError(f"--upstream takes no path: use {base} (request paths such as "
                          f"/v1/messages already carry /v1 and are forwarded unchanged)")
    if port == 0:
        raise ConfigError(f"--upstream {value!r}: port 0 is not a port to connect to")
    return base


def check_port(host: str, port: int) -> None:
    """Fail early, in one line, when the address cannot be listened on (in use, not this
    machine's, privileged). Port 0 (any free port) is not checked."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--listen: cannot resolve host {host!r}: {e.strerror}") from None
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mitmproxy binds
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(addr)
            except OSError as e:
                why = {
                    errno.EADDRINUSE: "the address is already in use by another process "
                    "(stop it, or choose another port with --listen)",
                    errno.EACCES: "permission denied (ports below 1024 need privileges)",
                    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
                }.get(e.errno or 0, e.strerror or str(e))
                raise ConfigError(f"cannot listen on {where}: {why}") from None


def check_log(path: str) -> None:
    """The decision log file can be opened for appending (it is created when missing)."""
    if path == "-":
        return
    from .decision_log import DecisionLog

    try:
        DecisionLog(path).close()
    except (FileExistsError, NotADirectoryError):  # a part of the folder path is a file
        raise ConfigError(f"cannot open the decision log {path}: a part of its folder path "
                          "is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"cannot open the decision log {path}: "
                          f"{e.strerror or e}") from None
