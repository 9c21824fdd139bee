"""Fanout hosts behind one nginx, for the multi-host test and the job benchmark.

Each host is a Fanout process with a Unix socket of its own, started by spawn-fcgi; nginx
balances over them, and /hostN/... reaches host N alone (the prefix stripped).
"""
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import time

# The FastCGI parameters Fanout reads, as every configuration of the project passes them.
PARAMS = pathlib.Path(__file__).resolve().parent.parent / "nginx" / "fanout_params"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self, binary: str, run_dir: str, environments: list[dict], base_env: dict | None = None):
        """Starts one host per entry of `environments` (extra environment variables), then nginx."""
        self.binary = binary
        self.run_dir = run_dir
        self.base_env = dict(os.environ, **(base_env or {}))
        self.environments = environments
        self.port = free_port()
        self.procs = [self.start_host(index) for index in range(len(environments))]
        self.nginx = self.start_nginx()

    def socket(self, index: int) -> str:
        return f"{self.run_dir}/host{index}.sock"

    def start_host(self, index: int) -> subprocess.Popen:
        """Starts (or restarts) host `index` and waits for its socket."""
        path = self.socket(index)
        if os.path.exists(path):
            os.unlink(path)
        env = dict(self.base_env, **self.environments[index])
        log = open(f"{self.run_dir}/host{index}.log", "a")
        proc = subprocess.Popen(["spawn-fcgi", "-s", path, "-M", "0660", "-b", "4096", "-n", "--", self.binary],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(400):
            if os.path.exists(path):
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"host {index} did not start; see {self.run_dir}/host{index}.log")

    def restart(self, index: int) -> None:
        self.procs[index] = self.start_host(index)

    def start_nginx(self) -> subprocess.Popen:
        run = self.run_dir
        # max_fails=0: a host that was down is tried again at once when it is back.
        servers = "\n".join(f"server unix:{self.socket(i)} max_fails=0;" for i in range(len(self.environments)))
        pinned = "\n".join(f"""location /host{i}/ {{
                rewrite ^/host{i}(/.*)$ $1 break;
                include {PARAMS};
                fastcgi_pass unix:{self.socket(i)};
            }}""" for i in range(len(self.environments)))
        user = "user root;" if os.getuid() == 0 else ""
        conf = f"""worker_processes 1;
daemon off;
pid {run}/nginx-cluster.pid;
error_log {run}/nginx-cluster.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {run}/cl-body; fastcgi_temp_path {run}/cl-fastcgi; proxy_temp_path {run}/cl-proxy;
    uwsgi_temp_path {run}/cl-uwsgi; scgi_temp_path {run}/cl-scgi;
    upstream fanout {{
        {servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            include {PARAMS};
            fastcgi_param REQUEST_ID $request_id;
            fastcgi_pass fanout;
            fastcgi_keep_conn on;
            # A host that is down refuses the connection before anything was sent: try the next.
            fastcgi_next_upstream error timeout;
        }}
        {pinned}
    }}
}}
"""
        path = f"{run}/nginx-cluster.conf"
        with open(path, "w") as f:
            f.write(conf)
        nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
        proc = subprocess.Popen([nginx, "-p", run, "-c", path], stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return proc
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"nginx did not start; see {run}/nginx-cluster.log")

    def call(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        """One request through nginx: (status, parsed JSON body or None)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            h = {"Content-Type": "application/json"} if data else {}
            h.update(headers or {})
            conn.request(method, path, body=data, headers=h)
            response = conn.getresponse()
            text = response.read()
            try:
                return response.status, (json.loads(text) if text else None)
            except ValueError:
                return response.status, None
        finally:
            conn.close()

    def stop(self) -> None:
        """nginx, then every host with SIGTERM (SIGKILL after 30 s)."""
        self.nginx.send_signal(signal.SIGQUIT)
        self.nginx.wait()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
