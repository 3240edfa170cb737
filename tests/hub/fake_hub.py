"""A small in-memory stand-in for the Hugging Face Hub HTTP API, served on 127.0.0.1 in a thread.

It implements just the endpoints the real `huggingface_hub` client (2.x, without hf_xet) calls for
create-repo, branch, preupload + commit (file deletions and `parentCommit` honoured; small files "regular":
base64 inside the ndjson commit; like the real Hub, *.safetensors go through LFS: batch endpoint, PUT of the
bytes, `lfsFile` commit entry), repo info, file tree and file download (HEAD/GET .../resolve/..., `X-Linked-Etag`/`X-Linked-Size` for LFS files), with
the headers and `X-Error-Code` values the client turns into its exceptions. Every request is recorded in
`FakeHub.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class FakeRepo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)       # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """The server state; start with `with FakeHub() as hub:` and point HF_ENDPOINT at `hub.url`."""

    def __init__(self, token: str | None = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lfs_blobs: dict[str, bytes] = {}   # sha256 -> content (uploaded through the LFS batch API)
        self.is_lfs: Callable[[str], bool] = lambda path: path.endswith(".safetensors")
        self.outage: int | None = None  # a status (503, 429) every request gets, as in an outage
        # Repos the test token may read but not write (a read-only token, another user's namespace): 403.
        self.read_only: set[str] = set()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    # --- direct state manipulation (hostile repos for the tests) -----------------------------------
    def create(self, repo_id: str, private: bool = False) -> FakeRepo:
        with self.lock:
            repo = self.repos.setdefault(repo_id, FakeRepo(private=private))
            if "main" not in repo.branches:
                sha = _sha(f"init {repo_id}".encode())
                repo.commits[sha] = {".gitattributes": b"*.safetensors filter=lfs\n"}
                repo.branches["main"] = sha
            return repo

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", deleted: tuple[str, ...] = ()) -> str:
        """Add/replace (and delete) files on a branch (creating the repo), bypassing the API; the new commit sha."""
        repo = self.create(repo_id)
        with self.lock:
            parent = repo.branches.get(branch) or repo.branches["main"]
            tree = {name: data for name, data in {**repo.commits[parent], **files}.items() if name not in deleted}
            sha = _sha(parent.encode() + json.dumps(sorted((k, _sha(v)) for k, v in tree.items())).encode())
            repo.commits[sha] = tree
            repo.branches[branch] = sha
            return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    def paths_requested(self, method: str = "GET") -> list[str]:
        return [p for m, p in self.requests if m == method]


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        # --- helpers ---------------------------------------------------------------------------
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    chunk = self.rfile.read(size + 2)[:size]  # chunk + CRLF
                    if size == 0:
                        return data
                    data += chunk
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json", head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers)

        def _error(self, status: int, code: str | None, message: str, head: bool = False) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            return hub.token is not None and auth == f"Bearer {hub.token}"

        def _may_write(self, repo_id: str) -> bool:
            """False (after a 403, as the Hub answers a token without write access) for a read-only repo."""
            if repo_id in hub.read_only:
                self._error(403, None, f"You don't have the rights to write to {repo_id}")
                return False
            return True

        def _repo(self, repo_id: str, head: bool = False) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                self._error(404 if repo is None else 401, "RepoNotFound", "Repository not found", head)
                return None
            return repo

        def _commit_of(self, repo: FakeRepo, revision: str, head: bool = False) -> str | None:
            sha = repo.resolve(revision)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            return sha

        # --- routing -----------------------------------------------------------------------------
        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            with hub.lock:
                hub.requests.append((method, unquote(path)))
            if hub.outage is not None:
                self._error(hub.outage, None, "the fake Hub is down", head=method == "HEAD")
                return
            for pattern, handler in ROUTES.get(method, []):
                match = re.fullmatch(pattern, path)
                if match:
                    handler(self, query=query, **{k: unquote(v) for k, v in match.groupdict().items() if v is not None})
                    return
            self._error(404, None, f"no fake route for {method} {path}")

        def do_GET(self) -> None:
            self._route("GET")

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        # --- endpoints -----------------------------------------------------------------------------
        def create_repo(self, query: dict) -> None:
            payload = json.loads(self._body() or b"{}")
            if not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
            # A read-only repo that exists gets the 409 below, not the Hub's 403: on a 403 the client asks
            # for the repo's info and returns a RepoUrl it cannot build for an endpoint other than the Hub's.
            if repo_id not in hub.repos and not self._may_write(repo_id):
                return
            if repo_id in hub.repos:  # the real Hub also names the existing repo's url in a 409
                self._send(409, json.dumps({"error": "You already created this model repo",
                                            "url": f"{hub.url}/{repo_id}"}).encode())
                return
            hub.create(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": "fake"})

        def validate_yaml(self, query: dict) -> None:
            self._body()
            self._json(200, {"errors": [], "warnings": []})

        def create_branch(self, query: dict, repo: str, branch: str) -> None:
            self._body()
            found = self._repo(repo) if self._authorized() else None
            if found is None:
                if not self._authorized():
                    self._error(401, None, "Invalid credentials in Authorization header")
                return
            if not self._may_write(repo):
                return
            if branch in found.branches:
                self._error(409, None, "Reference already exists")
                return
            with hub.lock:
                found.branches[branch] = found.branches["main"]
            self._json(200, {})

        def preupload(self, query: dict, repo: str, rev: str) -> None:
            payload = json.loads(self._body() or b"{}")
            found = self._repo(repo)
            if found is None or not self._may_write(repo):
                return
            files = [{"path": f["path"], "uploadMode": "lfs" if hub.is_lfs(f["path"]) else "regular",
                      "shouldIgnore": False, "oid": None} for f in payload.get("files", [])]
            self._json(200, {"files": files})

        def commit(self, query: dict, repo: str, rev: str) -> None:
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            if not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            found = self._repo(repo)
            if found is None or not self._may_write(repo):
                return
            if rev not in found.branches:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return
            files: dict[str, bytes] = {}
            deleted: list[str] = []
            for item in lines:
                if item["key"] == "header":
                    parent = item["value"].get("parentCommit")
                    if parent is not None and parent != found.branches[rev]:
                        self._error(412, None, "A commit has happened since. Please refresh and try again.")
                        return
                elif item["key"] == "deletedFile":
                    if item["value"]["path"] not in found.commits[found.branches[rev]]:
                        self._error(404, "EntryNotFound", f"{item['value']['path']} does not exist on {rev}")
                        return
                    deleted.append(item["value"]["path"])
                elif item["key"] == "file":
                    assert item["value"]["encoding"] == "base64"
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "lfsFile":
                    oid = item["value"]["oid"]
                    if oid not in hub.lfs_blobs:
                        self._error(422, None, f"LFS object {oid} was never uploaded")
                        return
                    files[item["value"]["path"]] = hub.lfs_blobs[oid]
                else:
                    self._error(400, None, f"fake hub supports files and file deletions only, got {item['key']}")
                    return
            sha = hub.commit(repo, files, branch=rev, deleted=tuple(deleted))
            self._json(200, {"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha,
                             "pullRequestUrl": None})

        def lfs_batch(self, query: dict, repo: str) -> None:
            payload = json.loads(self._body() or b"{}")
            if not self._authorized():
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            objects = []
            for obj in payload.get("objects", []):
                entry: dict = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_blobs:  # already stored objects get no action (no re-upload)
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
                objects.append(entry)
            self._json(200, {"transfer": "basic", "objects": objects})

        def lfs_put(self, query: dict, oid: str) -> None:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                self._error(400, None, "sha256 of the uploaded bytes does not match the oid")
                return
            with hub.lock:
                hub.lfs_blobs[oid] = data
            self._send(200)

        def repo_info(self, query: dict, repo: str, rev: str = "main") -> None:
            found = self._repo(repo)
            if found is None:
                return
            sha = self._commit_of(found, rev)
            if sha is None:
                return
            tree = found.commits[sha]
            self._json(200, {"id": repo, "modelId": repo, "sha": sha, "private": found.private,
                             "siblings": [{"rfilename": p} for p in sorted(tree)]})

        def tree(self, query: dict, repo: str, rev: str, sub: str = "") -> None:
            found = self._repo(repo)
            if found is None:
                return
            sha = self._commit_of(found, rev)
            if sha is None:
                return
            prefix = sub.strip("/") + "/" if sub.strip("/") else ""
            entries = []
            for p, c in sorted(found.commits[sha].items()):
                if p.startswith(prefix):
                    entry = {"type": "file", "path": p, "size": len(c), "oid": _sha(c)}
                    if hub.is_lfs(p):
                        entry["lfs"] = {"oid": hashlib.sha256(c).hexdigest(), "size": len(c), "pointerSize": 134}
                    entries.append(entry)
            self._json(200, entries)

        def resolve(self, query: dict, repo: str, rev: str, file: str, head: bool = False) -> None:
            found = self._repo(repo, head)
            if found is None:
                return
            sha = self._commit_of(found, rev, head)
            if sha is None:
                return
            content = found.commits[sha].get(file)
            if content is None:
                self._error(404, "EntryNotFound", f"{file} does not exist on {rev}", head)
                return
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_sha(content)}"'}
            if hub.is_lfs(file):  # LFS pointer: the client keys its cache blob by the sha256 of the content
                headers["X-Linked-Etag"] = f'"{hashlib.sha256(content).hexdigest()}"'
                headers["X-Linked-Size"] = str(len(content))
            self._send(200, content, headers, content_type="application/octet-stream", head=head)

        def resolve_head(self, query: dict, repo: str, rev: str, file: str) -> None:
            self.resolve(query, repo, rev, file, head=True)

    ROUTES = {
        "POST": [
            (r"/api/repos/create", Handler.create_repo),
            (r"/api/validate-yaml", Handler.validate_yaml),
            (rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", Handler.create_branch),
            (rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)", Handler.preupload),
            (rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)", Handler.commit),
            (rf"/{_REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
        ],
        "PUT": [(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", Handler.lfs_put)],
        "GET": [
            (rf"/api/models/{_REPO}", Handler.repo_info),
            (rf"/api/models/{_REPO}/revision/(?P<rev>[^/]+)", Handler.repo_info),
            (rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", Handler.tree),
            (rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", Handler.resolve),
        ],
        "HEAD": [(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", Handler.resolve_head)],
    }
    return Handler
