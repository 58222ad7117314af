#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub, for testing and benchmarking ckptpilot's remote pre-flight.

Python 3 standard library only. It serves the small part of the Hub's HTTP API that a header-only
pre-flight (ckptpilot's, or huggingface_hub's `get_safetensors_metadata`) touches, from a directory tree:

    python3 tools/hub_server.py ROOT --port-file FILE [--port 0] [--ignore-range]
        [--fail-first N] [--fail-status 503] [--retry-after S] [--redirect [--redirect-host H]] [--latency-ms 0]
        [--stall PART] [--slow-bytes PART [--byte-interval-ms 100]] [--endless PART] [--huge-length PART]
        [--file-redirect PART] [--extra-sibling JSON] [--lifetime S] [--verbose]

ROOT layout: ROOT/{org}/{name}/<files of the repo, subfolders allowed>. Repo directories and files may be
symlinks. An optional ROOT/{org}/{name}/.hub.json sets
    {"sha": "<40 hex>", "refs": {"v1.0": "<sha>", ...}, "token": "secret", "gated": true, "message": "..."}
("message" replaces the X-Error-Message of the repo's 401/403 answers: a hostile server's text.)
Without "sha" the commit is sha1(repo id). "main" and the sha itself resolve to the repo's sha, every name in
"refs" to its own sha (all revisions serve the same files). .hub.json is never listed nor served.

Endpoints (what the real Hub answers, as far as clients read it):
  GET  /api/models/{org}/{name}[/revision/{rev}]   model info: id, sha, gated, siblings (sorted, with sizes;
                                                   .safetensors files also carry "lfs": {size, sha256})
  GET  /api/models/{org}/{name}/tree/{rev}[/{dir}] tree listing (?recursive=1), no pagination
  GET|HEAD /{org}/{name}/resolve/{rev}/{path}      the file; ETag, X-Repo-Commit, Content-Length,
                                                   Accept-Ranges; .safetensors files also X-Linked-Etag and
                                                   X-Linked-Size. Range: bytes=a-b | a- | -n -> 206 / 416.
  GET|HEAD /_blobs/{org}/{name}/{path}             the "CDN" behind --redirect: bytes only, no auth
  GET  /_stats[?reset=1]   {"requests", "body_bytes", "connections", "blob_requests_with_authorization",
                            "by_path": {path: {"requests", "body_bytes"}}}
                           ("connections": TCP connections that carried a counted request: fewer than
                           "requests" when the client keeps them alive)
                           (reset=1 returns the counters, then zeroes them)
  POST /_stats/reset       zeroes the counters
Requests to /_stats are neither counted, delayed nor failed.

ETags are stable for the same path, size and mtime: a 40-hex "git blob id" (the ETag of small files, the
siblings' blobId) and, for .safetensors, a 64-hex "LFS sha256" (their ETag, X-Linked-Etag, lfs.sha256).
huggingface_hub names its cache blobs after X-Linked-Etag (else ETag) and its snapshots after X-Repo-Commit.

Errors carry the Hub's X-Error-Code header (huggingface_hub maps it to its exception classes):
  unknown repo 404 RepoNotFound; unknown revision 404 RevisionNotFound; unknown file 404 EntryNotFound
  (with X-Repo-Commit, as the Hub sends it); repo with a token: 401 GatedRepo without Authorization,
  403 GatedRepo with a wrong bearer token.

Test switches:
  --ignore-range   answer every Range request with 200 and the whole file (the client must stop reading)
  --redirect       /resolve of a .safetensors file answers 302 to http://127.0.0.1:PORT/_blobs/... carrying
                   X-Repo-Commit, X-Linked-Etag, X-Linked-Size (like the Hub's redirect to its CDN). The blob
                   answer has only ETag / Content-Length / Content-Range, no Hub headers, as a CDN.
  --redirect-host H  the host in that Location. With 'localhost' the "CDN" is another host to clients, as the
                   Hub's is: huggingface_hub then reads the metadata off the 302 and sends no Authorization to
                   /_blobs; with 127.0.0.1 it follows the HEAD to /_blobs (same host), finds no X-Repo-Commit
                   there, and hf_hub_download of a shard fails. /_stats counts blob requests with Authorization.
  --fail-first N   the first N requests answer --fail-status (503 default; 429 adds Retry-After: 0)
  --retry-after S  the Retry-After value of injected 429s (default 0)
  --latency-ms M   sleep M ms before answering each request (a simulated round trip)

Hostile-server switches (PART: a request whose decoded URL path contains PART is affected; each repeatable):
  --stall PART       accept the request and never answer (the handler waits until the server stops)
  --slow-bytes PART  send the headers at once, then the body one byte every --byte-interval-ms (slowloris)
  --endless PART     /resolve of a matching file answers 200 with no Content-Length and a body that never ends
  --huge-length PART as --endless, but declaring Content-Length: 1 TB
  --file-redirect PART  /resolve of a matching file answers 302 to file:///etc/passwd
  --extra-sibling JSON  list one more file (a JSON string literal, so that NUL and control characters fit on a
                     command line, e.g. '"bad\\u0000name.json"') with size 100; it is never served (404)
  --lifetime S       stop by itself after S seconds (tests pass it, so no server outlives a crashed test)

Files are streamed in chunks (shards may be sparse files of many GB); a client hanging up mid-body just ends
that response. body_bytes counts what was handed to the socket before any such error.
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

CHUNK = 64 * 1024
HUB_JSON = ".hub.json"


class Stats:
    """Request and body-byte counters, total and per URL path, behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self._zero()

    def _zero(self):
        self.generation = getattr(self, "generation", 0) + 1  # a connection counts again after a reset
        self.requests = 0
        self.body_bytes = 0
        self.connections = 0
        self.blob_auth = 0  # /_blobs requests that carried an Authorization header (a token sent to the "CDN")
        self.by_path = {}

    def request(self, path):
        with self.lock:
            self.requests += 1
            self.by_path.setdefault(path, {"requests": 0, "body_bytes": 0})["requests"] += 1

    def connection(self, handler):
        """Count the connection `handler` serves, once per reset."""
        with self.lock:
            if getattr(handler, "counted_generation", None) != self.generation:
                handler.counted_generation = self.generation
                self.connections += 1

    def body(self, path, n):
        with self.lock:
            self.body_bytes += n
            self.by_path.setdefault(path, {"requests": 0, "body_bytes": 0})["body_bytes"] += n

    def blob_with_auth(self):
        with self.lock:
            self.blob_auth += 1

    def snapshot(self, reset=False):
        """The counters as JSON-ready dict; with reset, zeroed in the same critical section."""
        with self.lock:
            snap = {"requests": self.requests, "body_bytes": self.body_bytes, "connections": self.connections,
                    "blob_requests_with_authorization": self.blob_auth,
                    "by_path": {p: dict(v) for p, v in sorted(self.by_path.items())}}
            if reset:
                self._zero()
            return snap


class HubError(Exception):
    """An error answer: status, X-Error-Code, message, extra headers."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Repo:
    """One repo directory: its commit, refs, token, and its files (stat'ed on demand)."""

    def __init__(self, root, org, name):
        self.id = f"{org}/{name}"
        self.dir = os.path.join(root, org, name)
        meta = {}
        hub_json = os.path.join(self.dir, HUB_JSON)
        if os.path.isfile(hub_json):
            with open(hub_json) as f:
                meta = json.load(f)
        self.sha = meta.get("sha") or hashlib.sha1(self.id.encode()).hexdigest()
        self.refs = dict(meta.get("refs") or {})
        self.token = meta.get("token")
        self.gated = bool(meta.get("gated"))
        self.message = meta.get("message")

    @staticmethod
    def load(root, org, name):
        if not org or not name or org.startswith(".") or name.startswith(".") or "/" in org + name:
            return None
        if not os.path.isdir(os.path.join(root, org, name)):
            return None
        return Repo(root, org, name)

    def resolve(self, rev):
        """The commit sha a revision names, or None."""
        if rev in ("main", self.sha):
            return self.sha
        if rev in self.refs:
            return self.refs[rev]
        if rev in self.refs.values():
            return rev
        return None

    def check_auth(self, authorization):
        if not self.token:
            return
        msg = self.message or (f"Access to model {self.id} is restricted. You must have access to it and be authenticated "
                               f"to access it.")
        if not authorization:
            raise HubError(401, "GatedRepo", msg)
        if authorization.strip() != f"Bearer {self.token}":
            raise HubError(403, "GatedRepo", msg + " Your token does not grant access to it.")

    def path_of(self, rel):
        """The local path of a file of the repo, or None (no '..', no hidden control file)."""
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or rel == HUB_JSON:
            return None
        if any("\0" in p for p in parts):
            return None  # no such file can exist (and os.path would raise)
        path = os.path.join(self.dir, *parts)
        return path if os.path.isfile(path) else None

    def files(self):
        """Sorted repo-relative paths of every file (symlinks followed, .hub.json and .git left out)."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            rel_dir = os.path.relpath(dirpath, self.dir)
            for fn in filenames:
                rel = fn if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{fn}"
                if rel != HUB_JSON and os.path.isfile(os.path.join(dirpath, fn)):
                    out.append(rel)
        return sorted(out)


def file_ids(rel, st):
    """(etag, linked_etag) of a file: stable for the same path, size and mtime.

    etag stands for the git blob id (40 hex), linked_etag for the LFS sha256 (64 hex) that the Hub sends as
    X-Linked-Etag and lists as siblings[].lfs.sha256 (they agree, as on the Hub)."""
    key = f"{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return hashlib.sha1(key).hexdigest(), hashlib.sha256(key).hexdigest()


def is_lfs(rel):
    return rel.endswith(".safetensors")


def parse_range(value, size):
    """(start, end) inclusive for a single 'bytes=' range; None to ignore the header; 'unsatisfiable'."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    a, sep, b = value[len("bytes="):].strip().partition("-")
    if not sep:
        return None
    try:
        if a == "":  # suffix: the last n bytes
            n = int(b)
            if n <= 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - n), size - 1
        start = int(a)
        end = int(b) if b != "" else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None  # syntactically invalid: RFC 9110 says ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if end is None else min(end, size - 1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-server"

    def version_string(self):
        return self.server_version
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms Nagle/delayed-ACK stalls

    # -- plumbing -------------------------------------------------------------------------------------------------

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            sys.stderr.write("hub_server: %s\n" % (fmt % args))

    def do_GET(self):
        self.dispatch(head=False)

    def do_HEAD(self):
        self.dispatch(head=True)

    def do_POST(self):
        self.head = False
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if urlsplit(self.path).path == "/_stats/reset":
            self.server.stats.reset()
            self.send_json(200, {"ok": True}, count=False)
        else:
            self.send_json(405, {"error": "method not allowed"}, count=False)

    def dispatch(self, head):
        self.head = head
        url = urlsplit(self.path)
        self.url_path = url.path
        self.query = parse_qs(url.query)
        if url.path == "/_stats":
            snap = self.server.stats.snapshot(reset=self.query.get("reset", ["0"])[0] not in ("0", ""))
            self.send_json(200, snap, count=False)
            return
        opts = self.server.opts
        self.server.stats.request(url.path)
        self.server.stats.connection(self)
        self.decoded_path = unquote(url.path)
        self.slow = self.matches(opts.slow_bytes)
        if self.matches(opts.stall):
            # Accepted, read, and never answered: the client's deadline is all that ends it.
            self.server.stopping.wait()
            self.close_connection = True
            return
        if opts.latency_ms > 0:
            time.sleep(opts.latency_ms / 1000.0)
        try:
            if self.server.take_failure():
                headers = {"Retry-After": str(opts.retry_after)} if opts.fail_status == 429 else {}
                self.send_json(opts.fail_status, {"error": f"injected failure ({opts.fail_status})"}, headers)
                return
            self.route(url.path)
        except HubError as e:
            headers = {"X-Error-Code": e.code, "X-Error-Message": e.message, **e.headers}
            self.send_json(e.status, {"error": e.message}, headers)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def matches(self, parts):
        return any(p in self.decoded_path for p in parts or ())

    def write_body(self, data):
        """Write part of a body, counting the bytes once the socket took them (one at a time under --slow-bytes)."""
        if not self.slow:
            self.wfile.write(data)
            self.server.stats.body(self.url_path, len(data))
            return
        for i in range(len(data)):
            if self.server.stopping.wait(self.server.opts.byte_interval_ms / 1000.0):
                raise ConnectionAbortedError("server stopping")
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            self.server.stats.body(self.url_path, 1)

    def send_endless(self, declare_huge):
        """200 with a body that never ends (until the client hangs up): no length, or a 1 TB Content-Length."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declare_huge:
            self.send_header("Content-Length", str(10 ** 12))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.head:
            return
        self.write_body(b'{"padding": "')
        chunk = b"x" * CHUNK
        while not self.server.stopping.is_set():
            self.write_body(chunk)

    def send_json(self, status, obj, headers=None, count=True):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not self.head:
            if count:
                self.write_body(body)
            else:
                self.wfile.write(body)

    # -- routes ---------------------------------------------------------------------------------------------------

    def route(self, path):
        # Split the raw path first, then unquote each segment: a revision may be 'refs%2Fpr%2F1'.
        segs = [unquote(s) for s in path.split("/")[1:]]
        if len(segs) >= 3 and segs[0] == "api" and segs[1] == "models":
            return self.api(segs[2:])
        if len(segs) >= 4 and segs[0] == "_blobs":
            return self.blob(segs[1], segs[2], "/".join(segs[3:]))
        if len(segs) >= 5 and segs[2] == "resolve":
            return self.resolve(segs[0], segs[1], segs[3], "/".join(segs[4:]))
        raise HubError(404, "NotFound", f"no route for {path}")

    def repo(self, org, name):
        repo = Repo.load(self.server.root, org, name)
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository Not Found: {org}/{name}")
        repo.check_auth(self.headers.get("Authorization"))
        return repo

    def revision(self, repo, rev):
        sha = repo.resolve(rev)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    def api(self, segs):
        """/api/models/{org}/{name}[/revision/{rev}] and /api/models/{org}/{name}/tree/{rev}[/{dir}]."""
        if len(segs) < 2:
            raise HubError(404, "NotFound", "no route")
        repo = self.repo(segs[0], segs[1])
        rest = segs[2:]
        if not rest:
            return self.model_info(repo, "main")
        if rest[0] == "revision" and len(rest) >= 2:
            return self.model_info(repo, "/".join(rest[1:]))
        if rest[0] == "tree" and len(rest) >= 2:
            return self.tree(repo, rest[1], "/".join(rest[2:]))
        raise HubError(404, "NotFound", "no route")

    def sibling(self, repo, rel):
        st = os.stat(os.path.join(repo.dir, *rel.split("/")))
        oid, sha256 = file_ids(rel, st)
        entry = {"rfilename": rel, "blobId": oid, "size": st.st_size}
        if is_lfs(rel):
            entry["lfs"] = {"size": st.st_size, "sha256": sha256, "pointerSize": 134}
        return entry

    def model_info(self, repo, rev):
        sha = self.revision(repo, rev)
        self.send_json(200, {
            "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24],
            "id": repo.id,
            "modelId": repo.id,
            "author": repo.id.split("/")[0],
            "sha": sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "siblings": [self.sibling(repo, rel) for rel in repo.files()] + [
                {"rfilename": n, "blobId": hashlib.sha1(n.encode()).hexdigest(), "size": 100}
                for n in self.server.extra_siblings],
        })

    def tree(self, repo, rev, sub):
        self.revision(repo, rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        files = [f for f in repo.files() if f.startswith(prefix)]
        if prefix and not files:
            raise HubError(404, "EntryNotFound", f"{sub} does not exist on \"{rev}\"")
        out, dirs = [], set()
        for rel in files:
            tail = rel[len(prefix):].split("/")
            for i in range(1, len(tail) if recursive else min(2, len(tail))):
                d = prefix + "/".join(tail[:i])
                if d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or len(tail) == 1:
                s = self.sibling(repo, rel)
                item = {"type": "file", "oid": s["blobId"], "size": s["size"], "path": rel}
                if "lfs" in s:
                    item["lfs"] = {"oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}
                out.append(item)
        self.send_json(200, out)

    def resolve(self, org, name, rev, rel):
        repo = self.repo(org, name)
        sha = self.revision(repo, rev)
        if self.matches(self.server.opts.file_redirect):
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = repo.path_of(rel)
        if path is None:
            raise HubError(404, "EntryNotFound", f"{rel} does not exist on \"{rev}\"", {"X-Repo-Commit": sha})
        if self.matches(self.server.opts.endless) or self.matches(self.server.opts.huge_length):
            return self.send_endless(declare_huge=self.matches(self.server.opts.huge_length))
        st = os.stat(path)
        oid, sha256 = file_ids(rel, st)
        headers = {"X-Repo-Commit": sha}
        if is_lfs(rel):
            headers["X-Linked-Etag"] = f'"{sha256}"'
            headers["X-Linked-Size"] = str(st.st_size)
        if is_lfs(rel) and self.server.opts.redirect:
            host = self.server.opts.redirect_host or self.server.server_address[0]
            port = self.server.server_address[1]
            location = f"http://{host}:{port}/_blobs/{quote(org)}/{quote(name)}/{quote(rel)}"
            body = f"Found. Redirecting to {location}".encode()
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("ETag", f'"{oid}"')
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if not self.head:
                self.write_body(body)
            return
        self.send_file(path, st, sha256 if is_lfs(rel) else oid, headers)

    def blob(self, org, name, rel):
        """The CDN side of --redirect: no auth, no Hub headers, just the bytes."""
        if self.headers.get("Authorization"):
            self.server.stats.blob_with_auth()
        repo = Repo.load(self.server.root, org, name)
        path = repo.path_of(rel) if repo else None
        if path is None:
            raise HubError(404, "EntryNotFound", f"no blob {org}/{name}/{rel}")
        st = os.stat(path)
        self.send_file(path, st, file_ids(rel, st)[1], {})

    def send_file(self, path, st, etag, headers):
        size = st.st_size
        rng = None if self.server.opts.ignore_range else parse_range(self.headers.get("Range"), size)
        if rng == "unsatisfiable":
            body = b"Requested Range Not Satisfiable"
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            if not self.head:
                self.write_body(body)
            return
        start, end = rng if rng else (0, size - 1)
        length = end - start + 1 if size else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.head or length == 0:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:  # the file shrank under us: the connection can't be reused
                    self.close_connection = True
                    return
                self.write_body(chunk)
                left -= len(chunk)


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients open dozens of connections at once; the default backlog is 5

    def __init__(self, opts):
        self.opts = opts
        self.root = os.path.abspath(opts.root)
        self.stats = Stats()
        self.fail_lock = threading.Lock()
        self.failures_left = opts.fail_first
        self.stopping = threading.Event()  # set when the server stops: stalled and slow handlers end then
        self.extra_siblings = [json.loads(j) for j in opts.extra_sibling or ()]
        super().__init__(("127.0.0.1", opts.port), Handler)

    def take_failure(self):
        with self.fail_lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return True
            return False

    def handle_error(self, request, client_address):
        # A client hanging up is normal (it read a header and stopped); anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="ROOT/{org}/{name}/... holds the repos")
    ap.add_argument("--port-file", required=True, help="the chosen port is written here (atomically)")
    ap.add_argument("--port", type=int, default=0, help="0 = an ephemeral port")
    ap.add_argument("--ignore-range", action="store_true", help="answer Range requests with 200 and the whole file")
    ap.add_argument("--fail-first", type=int, default=0, metavar="N", help="fail the first N requests")
    ap.add_argument("--fail-status", type=int, default=503, help="status of the injected failures (503, 429, ...)")
    ap.add_argument("--redirect", action="store_true", help="302 .safetensors downloads to /_blobs/ (CDN-like)")
    ap.add_argument("--redirect-host", metavar="HOST",
                    help="host name in the redirect's Location (default 127.0.0.1; 'localhost' makes it another host "
                         "to clients: they drop Authorization and read the metadata off the 302, as with the Hub's CDN)")
    ap.add_argument("--retry-after", type=int, default=0, help="Retry-After seconds of injected 429s")
    ap.add_argument("--latency-ms", type=float, default=0, help="delay before answering each request")
    ap.add_argument("--stall", action="append", metavar="PART", help="never answer a request whose path has PART")
    ap.add_argument("--slow-bytes", action="append", metavar="PART", help="send matching bodies one byte at a time")
    ap.add_argument("--byte-interval-ms", type=float, default=100, help="the pause between bytes of --slow-bytes")
    ap.add_argument("--endless", action="append", metavar="PART", help="matching files: a body without end or length")
    ap.add_argument("--huge-length", action="append", metavar="PART",
                    help="matching files: a body without end, declared as 1 TB")
    ap.add_argument("--file-redirect", action="append", metavar="PART", help="matching files: 302 to a file:// URL")
    ap.add_argument("--extra-sibling", action="append", metavar="JSON",
                    help="list one more file name, given as a JSON string literal (never served)")
    ap.add_argument("--lifetime", type=float, default=0, help="stop by itself after this many seconds (0: never)")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    opts = ap.parse_args()
    if not os.path.isdir(opts.root):
        ap.error(f"{opts.root} is not a directory")
    server = HubServer(opts)
    tmp = opts.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, opts.port_file)
    if opts.lifetime > 0:
        def stop():
            server.stopping.set()
            server.shutdown()
        timer = threading.Timer(opts.lifetime, stop)
        timer.daemon = True
        timer.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()


if __name__ == "__main__":
    main()
