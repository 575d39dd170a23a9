"""Redis topologies for the tests, started from the `redis-server` binary: Cluster, Sentinel, TLS.

Every process runs on free ports of 127.0.0.1 (never 6379) in a temporary directory, with
persistence off and its log beside it. A topology that cannot start raises TopologyError
with the end of the log that says why; `stop()` kills every process it started, and the
session fixtures in conftest.py call it however the tests end.

    Cluster    3 masters + 3 replicas; fail_over() kills a master and waits for its replica's
               promotion, restart() brings a killed node back (as a replica)
    Sentinels  1 master, 1 replica, 3 sentinels (quorum 2); fail_over() kills the master and
               waits until every sentinel names the new one, restore() brings it back
    TLSServer  TLS only (--port 0), with a CA, server and client certificates made by openssl
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis

#: data nodes keep nothing on disk, and a replica syncs at once (not after the 5 s default delay)
NO_PERSISTENCE = ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
#: how long a topology may take to start, fail over or heal before TopologyError
DEADLINE = 60.0


class TopologyError(RuntimeError):
    """A test topology could not start or heal; the message says where its logs are."""


class NotYet(Exception):
    """A check cannot be answered yet (the sentinels disagree on the master, say)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise TopologyError(f"{name} is not installed; the tests need it (apt-get install redis-server)")
    return path


def wait_for(what: str, check: Callable[[], bool], logs: Iterable[Node] = (), deadline: float = DEADLINE) -> None:
    """Poll `check` until it holds; else TopologyError naming `what` and the nodes' logs."""
    end = time.monotonic() + deadline
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError, NotYet):
            pass  # not up yet
        if time.monotonic() > end:
            tails = "\n".join(node.tail() for node in logs)
            raise TopologyError(f"timed out after {deadline:.0f}s waiting for {what}\n{tails}")
        time.sleep(0.05)


class Node:
    """One redis-server (or sentinel) process we own: start, kill, start again on its port."""

    def __init__(self, directory: Path, *args: str, config: str | None = None, tls: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "redis.log"
        self.args, self.config, self.tls = args, config, tls
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Node({self.port})"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *extra: str) -> None:
        """Start the process and wait until it answers PING."""
        command = [binary("redis-server")]
        if self.config is not None:
            path = self.directory / "node.conf"
            path.write_text(self.config)  # a sentinel rewrites its file: a fresh one per start
            command.append(str(path))
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        command += [*port, "--bind", "127.0.0.1", "--dir", str(self.directory), "--logfile", str(self.log),
                    *self.args, *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client(socket_connect_timeout=0.5, socket_timeout=2)
        try:
            wait_for(f"redis-server on port {self.port} to answer", lambda: self._answers(client), [self], deadline=20)
        finally:
            client.close()

    def _answers(self, client: redis.Redis) -> bool:
        if not self.alive:
            raise TopologyError(f"redis-server on port {self.port} exited at start\n{self.tail()}")
        return bool(client.ping())

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    stop = kill

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client of this one node (for the fixtures' own checks and admin commands)."""
        return redis.Redis(port=self.port, **{**(self.tls or {}), **kwargs})

    def info(self, section: str) -> dict[str, Any]:
        with self.client(socket_timeout=2) as client:
            return client.info(section)

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else ["(no log)"]
        return f"--- {self.log} (last {lines} lines):\n" + "\n".join(text[-lines:])


class Topology:
    """Processes started together and stopped together."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def start(self) -> None:
        raise NotImplementedError

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


class Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


T = TypeVar("T", bound=Startable)


@contextmanager
def started(topology: T) -> Iterator[T]:
    """The topology, started; every process it started is killed on exit, however it ends."""
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


# -- Redis Cluster ----------------------------------------------------------------------------


class Cluster(Topology):
    """3 masters, each with 1 replica; every node has its own directory (and nodes.conf)."""

    NODE_TIMEOUT_MS = 1500  # how long a master may be silent before its replica takes over

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        super().__init__()
        self.masters_wanted, self.replicas_wanted = masters, replicas
        for i in range(masters * (1 + replicas)):
            # the cluster bus port is chosen too (cluster-port), so it is a free one
            self.add(Node(directory / f"node-{i}", *NO_PERSISTENCE,
                          "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
                          "--cluster-port", str(free_port())))

    @property
    def url(self) -> str:
        """A cluster URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        create = subprocess.run(
            [binary("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", str(self.replicas_wanted), "--cluster-yes"],
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )
        if create.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}")
        self.wait_healthy()

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    def role(self, node: Node) -> str:
        return str(node.info("replication")["role"])

    def masters(self) -> list[Node]:
        return [node for node in self.live() if self.role(node) == "master"]

    def wait_healthy(self) -> None:
        """Until every live node says cluster_state:ok and sees every other live node connected
        and not failing, there are as many masters as wanted, and every replica is in sync."""

        def healthy() -> bool:
            live = self.live()
            ports = {node.port for node in live}
            for node in live:
                with node.client(socket_timeout=2) as client:
                    if cluster_state(client) != "ok":
                        return False
                    # every live node is seen as connected and not failing by every other
                    seen = cluster_view(client)
                    if any("fail" in seen.get(port, "fail") or not seen[port].endswith(" connected") for port in ports):
                        return False
                if self.role(node) == "slave" and node.info("replication")["master_link_status"] != "up":
                    return False
            return len(self.masters()) == self.masters_wanted

        wait_for("the cluster to be healthy (cluster_state:ok, replicas in sync)", healthy, self.nodes)

    def wait_replicated(self) -> None:
        """Until every replica has everything its master has written."""

        def replicated() -> bool:
            for master in self.masters():
                info = master.info("replication")
                offsets = [v["offset"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                if len(offsets) != self.replicas_wanted or any(o != info["master_repl_offset"] for o in offsets):
                    return False
            return True

        wait_for("every replica to catch up with its master", replicated, self.nodes)

    def owner(self, key: str) -> Node:
        """The master that holds `key`'s slot."""
        with self.live()[0].client(socket_timeout=2) as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            ports = [port for start, end, (_, port, *_), *_ in raw(client, "CLUSTER", "SLOTS") if start <= slot <= end]
        return next(node for node in self.nodes if node.port in ports)

    def fail_over(self, master: Node | None = None) -> tuple[Node, Node]:
        """Kill a master (the first one by default) and wait until its replica is master in its
        place and the cluster is ok again. Returns (killed master, promoted replica)."""
        master = master or self.masters()[0]
        replicas = [node for node in self.live() if node is not master and self.role(node) == "slave"
                    and node.info("replication")["master_port"] == master.port]
        if not replicas:
            raise TopologyError(f"master {master} has no live replica to fail over to")
        master.kill()
        promoted: list[Node] = []

        def promotion() -> bool:
            promoted[:] = [node for node in replicas if self.role(node) == "master"]
            return bool(promoted)

        wait_for(f"a replica of {master} to be promoted", promotion, self.nodes)
        self.wait_healthy()
        return master, promoted[0]

    def restart(self, node: Node) -> None:
        """Start a killed node again on its port; it rejoins (as a replica if it was failed over)."""
        node.start()
        self.wait_healthy()


def cluster_state(client: redis.Redis) -> str:
    """A node's cluster_state: 'ok' or 'fail'."""
    return dict(line.split(":", 1) for line in raw(client, "CLUSTER", "INFO").split() if ":" in line)["cluster_state"]


def cluster_view(client: redis.Redis) -> dict[int, str]:
    """How a node sees the others: port -> flags ('master', 'slave,fail?', ...) and link state."""
    view = {}
    for line in raw(client, "CLUSTER", "NODES").splitlines():
        _, address, flags, _, _, _, _, link, *_ = line.split()
        view[int(address.split("@")[0].rsplit(":", 1)[1])] = f"{flags.removeprefix('myself,')} {link}"
    return view


def raw(client: redis.Redis, *command: str) -> Any:
    """A command's reply as Redis wrote it, text decoded (redis-py parses CLUSTER replies
    differently from version to version)."""
    name = " ".join(command)
    client.set_response_callback(name, lambda response, **options: response)
    reply = client.execute_command(name)
    return reply.decode() if isinstance(reply, bytes) else reply


# -- Sentinel ---------------------------------------------------------------------------------


class Sentinels(Topology):
    """A master, a replica and 3 sentinels watching them as SERVICE (quorum 2)."""

    SERVICE = "taskit"
    DOWN_AFTER_MS = 1000
    FAILOVER_TIMEOUT_MS = 4000

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.data = [self.add(Node(directory / f"data-{i}", *NO_PERSISTENCE)) for i in range(2)]
        self.sentinels = [self.add(Node(directory / f"sentinel-{i}", "--sentinel")) for i in range(3)]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{self.SERVICE}"

    def start(self) -> None:
        first, second = self.data
        first.start()
        second.start("--replicaof", "127.0.0.1", str(first.port))
        for sentinel in self.sentinels:
            sentinel.config = (
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {first.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} {self.FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            sentinel.start()
        self.wait_healthy()

    def master(self) -> Node:
        """The data node every sentinel names as master (and that says so itself)."""
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client(socket_timeout=2) as client:
                ports.add(int(client.sentinel_get_master_addr_by_name(self.SERVICE)[1]))
        if len(ports) != 1:
            raise NotYet(f"the sentinels name different masters: {sorted(ports)}")
        return next(node for node in self.data if node.port in ports)

    def replica(self) -> Node:
        master = self.master()
        return next(node for node in self.data if node is not master)

    def wait_healthy(self) -> None:
        """Until the sentinels agree on a master that says it is one, know each other and a
        replica in sync, and see nothing down."""

        def healthy() -> bool:
            master = self.master()
            if not master.alive or master.info("replication")["role"] != "master":
                return False
            replica = self.replica()
            if not replica.alive or replica.info("replication").get("master_link_status") != "up":
                return False
            for sentinel in self.sentinels:
                with sentinel.client(socket_timeout=2) as client:
                    state = client.sentinel_master(self.SERVICE)
                    replicas = client.sentinel_slaves(self.SERVICE)
                if state["num-other-sentinels"] != len(self.sentinels) - 1 or state["is_sdown"]:
                    return False
                if not any(r["port"] == replica.port and not r["is_sdown"] for r in replicas):
                    return False
            return True

        wait_for("the sentinels to agree on a healthy master and replica", healthy, self.nodes)

    def fail_over(self) -> tuple[Node, Node]:
        """Kill the master and wait until every sentinel names the replica, promoted, as the
        master. Returns (killed master, new master)."""
        old, new = self.master(), self.replica()
        old.kill()

        def promoted() -> bool:
            return self.master() is new and new.info("replication")["role"] == "master"

        wait_for(f"the sentinels to promote {new} after {old} was killed", promoted, self.nodes)
        return old, new

    def restore(self, node: Node) -> None:
        """Start a killed data node again as a replica of the current master."""
        node.start("--replicaof", "127.0.0.1", str(self.master().port))
        self.wait_healthy()


# -- TLS ------------------------------------------------------------------------------------


class Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, made
    with openssl (EC keys: fast to make)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.server, self.server_key = directory / "server.crt", directory / "server.key"
        self.client, self.client_key = directory / "client.crt", directory / "client.key"
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl("req", "-x509", *key, "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
                      "-subj", "/CN=taskit test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._sign("server", self.server, self.server_key,
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", key)
        self._sign("client", self.client, self.client_key, "extendedKeyUsage=clientAuth\n", key)

    def _sign(self, name: str, cert: Path, cert_key: Path, extensions: str, key: list[str]) -> None:
        request, ext = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions)
        self._openssl("req", "-new", *key, "-keyout", cert_key, "-out", request, "-subj", f"/CN=taskit test {name}")
        self._openssl("x509", "-req", "-in", request, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                      "-out", cert, "-days", "2", "-extfile", ext)

    def _openssl(self, *args: str | Path) -> None:
        done = subprocess.run([binary("openssl"), *map(str, args)], capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise TopologyError(f"openssl {args[0]} failed:\n{done.stderr}")


class TLSServer(Topology):
    """A redis-server that speaks only TLS; `auth_clients` is its --tls-auth-clients (yes:
    a client certificate is required; optional: checked if given)."""

    def __init__(self, directory: Path, certificates: Certificates, auth_clients: str = "yes") -> None:
        super().__init__()
        self.certificates = certificates
        admin = {"ssl": True, "ssl_ca_certs": str(certificates.ca), "ssl_certfile": str(certificates.client),
                 "ssl_keyfile": str(certificates.client_key)}
        self.node = self.add(Node(
            directory, *NO_PERSISTENCE,
            "--tls-cert-file", str(certificates.server), "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.ca), "--tls-auth-clients", auth_clients, tls=admin,
        ))

    def start(self) -> None:
        self.node.start()

    def url(self, client_certificate: bool = True, host: str = "127.0.0.1") -> str:
        """A rediss:// URL that trusts the test CA (and shows the client certificate)."""
        c = self.certificates
        url = f"rediss://{host}:{self.node.port}/0?ssl_ca_certs={c.ca}"
        if client_certificate:
            url += f"&ssl_certfile={c.client}&ssl_keyfile={c.client_key}"
        return url
