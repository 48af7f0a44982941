"""LoopbackHub: a fake Hugging Face Hub on 127.0.0.1 for tests, standard library only.

The real clients (huggingface_hub, transformers, datasets) talk to it through ``HF_ENDPOINT=hub.endpoint``
(read at import time, so use a fresh process with ``hub.env(tmp)``) or ``HfApi(endpoint=hub.endpoint,
token=hub.token)`` in-process. Repos live under ``root``: blobs by git sha1 in ``blobs/``, one JSON file per
repo (``{type}s/{namespace}/{name}.json``) holding its branches and every commit's {path: blob} map, so
``resolve/<commit sha>/…`` keeps serving old content.

Endpoints ({t} is models, datasets or spaces; {rev} a branch or a 40-hex commit sha):
  GET  /api/whoami-v2
  POST /api/repos/create                JSON name, organization, type, sdk, private|visibility; 409 if it exists
  DELETE /api/repos/delete              JSON name, organization, type
  POST /api/validate-yaml               README.md metadata: always valid
  GET  /api/{t}/{id}[/revision/{rev}]   id, sha, private, siblings (size and blobId with ?blobs=1), sdk, dates
  POST /api/{t}/{id}/preupload/{rev}    every file "regular" (sent inline, base64, in the commit) + current oid
  POST /api/{t}/{id}/commit/{rev}       NDJSON header (parentCommit checked: 412), file, deletedFile, deletedFolder
  GET  /api/{t}/{id}/tree/{rev}[/{dir}] ?recursive=True, ?expand=True (lastCommit); one page (no Link header)
  POST /api/{t}/{id}/paths-info/{rev}   form paths=…, expand=…
  GET|HEAD /{id}/resolve/{rev}/{path}, /datasets/{id}/resolve/…, /spaces/{id}/resolve/…: ETag (git sha1),
       X-Repo-Commit, Content-Length, Accept-Ranges; one "Range: bytes=…" gives 206 + Content-Range (or 416)
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) and X-Error-Message as on the Hub.
(CommitOperationCopy works: the client downloads the source and sends it inline.) Not implemented: LFS and xet
transfers (``lfsFile`` operations get 400), pull requests (``create_pr``) and refs/pr/*, branch and tag creation,
pagination, gated repos, discussions, likes, the dataset viewer (``datasets-server.*`` is another host: datasets'
look-up there fails and it moves on), Spaces runtime, chunked request bodies. Any other route gets 404
{"error": …} and is appended to ``hub.unknown`` ("METHOD /path"), as is a request that crashed a handler
("ERROR METHOD /path: exception", answered 500): tests assert ``hub.unknown == []``.

Auth: ``Authorization: Bearer <hub.token>``. A wrong token gets 401 "Invalid credentials in Authorization
header" on every route; no token gets 401 on writes (create, delete, preupload, commit) and whoami; a private
repo without the token looks missing (401 RepoNotFound). Public repos read fine without a token.

Fault injection: ``hub.fail(kind, times=1, status=None)`` makes the next ``times`` requests of route ``kind``
(one of KINDS) fail, after their body was read and before anything changes: with HTTP ``status`` and a JSON
error, or, for ``status=None``, by closing the connection without a response (network down mid-upload).
``hub.requests`` lists every request as (method, kind, path). Beware: huggingface_hub retries preupload and
tree listings (http_backoff: connection errors and 408/429/5xx, up to 5 retries, 1+2+4+8+8 s of sleep), while
the commit POST is sent once.
"""

import base64
import datetime
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

KINDS = ("whoami", "create", "delete", "validate-yaml", "info", "preupload", "commit", "tree", "paths-info", "resolve")
API = {("GET", "whoami-v2"): "whoami", ("POST", "repos/create"): "create", ("DELETE", "repos/delete"): "delete",
       ("POST", "validate-yaml"): "validate-yaml"}
REPO_API = {("POST", "preupload"): "preupload", ("POST", "commit"): "commit", ("GET", "tree"): "tree",
            ("POST", "paths-info"): "paths-info"}
NEEDS_TOKEN = {"whoami", "create", "delete", "preupload", "commit"}
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An error answer: `status`, X-Error-Code `code`, X-Repo-Commit `commit`, extra JSON `body` fields."""

    def __init__(self, status, message, code=None, commit=None, **body):
        super().__init__(message)
        self.status, self.code, self.commit, self.body = status, code, commit, body


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_true(values):
    return values[0].lower() in ("1", "true") if values else False


class LoopbackHub:
    """A running fake Hub: `endpoint` (http://127.0.0.1:PORT), `token`, `user`; `close()` stops it."""

    def __init__(self, root, token="hf_loopback_token", user="loopback-user"):
        self.root, self.token, self.user = Path(root), token, user
        self.requests, self.unknown, self._faults, self._lock = [], [], [], threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads, self._httpd.hub = True, self
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail(self, kind, times=1, status=None):
        """Fail the next `times` requests of route `kind` with HTTP `status`, or drop the connection (None)."""
        assert kind in KINDS, kind
        with self._lock:
            self._faults.append([kind, times, status])

    def env(self, home, **extra):
        """os.environ for a fresh client process: this endpoint and token, online, every HF cache under `home`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
        hf = Path(home) / "hf"
        env.update(HF_ENDPOINT=self.endpoint, HF_TOKEN=self.token, HF_HUB_OFFLINE="0", HF_HOME=str(hf),
                   HF_HUB_CACHE=str(hf / "hub"), HF_DATASETS_CACHE=str(hf / "datasets"),
                   HF_MODULES_CACHE=str(hf / "modules"), HF_HUB_DISABLE_TELEMETRY="1", HF_UPDATE_DOWNLOAD_COUNTS="0",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        return {**env, **extra}

    # ---- storage: blobs/<git sha1>, {type}s/<namespace>/<name>.json = {private, sdk, createdAt, refs, commits} ----
    def _load(self, t, repo_id):
        path = self.root / t / f"{repo_id}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _write(self, path, data):  # atomic: readers never see half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".tmp").write_bytes(data)
        os.replace(path.with_name(path.name + ".tmp"), path)

    def _size(self, oid):
        return (self.root / "blobs" / oid).stat().st_size

    def _add_commit(self, repo, branch, files, title, parent):
        sha = os.urandom(20).hex()
        repo["commits"][sha] = {"parent": parent, "title": title, "date": now(), "files": files}
        repo["refs"][branch] = sha
        return sha

    def _repo(self, t, repo_id, authed, rev=None):
        """(repo, commit sha of `rev`), or the HubError the Hub answers."""
        repo = self._load(t, repo_id)
        if repo is None or (repo["private"] and not authed):
            raise HubError(401 if repo else 404, f"Repository {repo_id} not found", "RepoNotFound")
        sha = repo["refs"].get(rev or "main") or (rev if rev in repo["commits"] else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo, sha

    def _entries(self, repo, sha, paths, expand):
        """Tree entries as the Hub sends them for `paths` (files or folders) at commit `sha`."""
        def inside(commit, path):
            return {p: o for p, o in repo["commits"][commit]["files"].items() if p == path or p.startswith(path + "/")}

        out, files = [], repo["commits"][sha]["files"]
        for path in paths:
            if path in files:
                entry = {"type": "file", "path": path, "oid": files[path], "size": self._size(files[path])}
            else:
                tree_id = hashlib.sha1(json.dumps(sorted(inside(sha, path).items())).encode()).hexdigest()
                entry = {"type": "directory", "path": path, "oid": tree_id}
            if expand:  # the last commit that changed the path
                last = sha
                while (parent := repo["commits"][last]["parent"]) and inside(parent, path) == inside(last, path):
                    last = parent
                commit = repo["commits"][last]
                entry["lastCommit"] = {"id": last, "title": commit["title"], "date": commit["date"]}
            out.append(entry)
        return out

    # ---- routes: handlers get the request, return (status, headers, body: bytes or JSON-able) ----
    def route(self, method, parts):
        """(kind, handler, args) for a request path split in unquoted segments, or None if unknown."""
        if parts[:1] == ["api"]:
            if kind := API.get((method, "/".join(parts[1:]))):
                return kind, getattr(self, "_" + kind.replace("-", "_")), ()
            if len(parts) < 4 or parts[1] not in ("models", "datasets", "spaces"):
                return None
            t, repo_id, rest = parts[1], "/".join(parts[2:4]), parts[4:]
            if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
                return "info", self._info, (t, repo_id, rest[1] if rest else None)
            if len(rest) >= 2 and (kind := REPO_API.get((method, rest[0]))) and (len(rest) == 2 or kind == "tree"):
                return kind, getattr(self, "_" + kind.replace("-", "_")), (t, repo_id, rest[1], "/".join(rest[2:]))
            return None
        t, parts = (parts[0], parts[1:]) if parts[0] in ("datasets", "spaces") else ("models", parts)
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return "resolve", self._resolve, (t, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        return None

    def _whoami(self, req):
        return 200, {}, {"type": "user", "name": self.user, "fullname": self.user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}}}

    def _repo_id(self, body):
        return (body.get("type") or "model") + "s", f"{body.get('organization') or self.user}/{body['name']}"

    def _create(self, req):
        body = req.json()
        t, repo_id = self._repo_id(body)
        url = f"{self.endpoint}/{'' if t == 'models' else t + '/'}{repo_id}"
        if t not in ("models", "datasets", "spaces") or (t == "spaces") != bool(body.get("sdk")):
            raise HubError(400, f"Invalid repo type {t} or space sdk {body.get('sdk')}")
        with self._lock:
            if self._load(t, repo_id) is not None:
                raise HubError(409, "You already created this repo", url=url)  # exist_ok=True reads the url
            repo = {"private": bool(body.get("private")) or body.get("visibility") == "private",
                    "sdk": body.get("sdk"), "createdAt": now(), "refs": {}, "commits": {}}
            self._write(self.root / "blobs" / git_sha1(GITATTRIBUTES), GITATTRIBUTES)
            self._add_commit(repo, "main", {".gitattributes": git_sha1(GITATTRIBUTES)}, "initial commit", None)
            self._write(self.root / t / f"{repo_id}.json", json.dumps(repo).encode())
        return 200, {}, {"url": url, "name": repo_id, "id": repo_id}

    def _delete(self, req):
        t, repo_id = self._repo_id(req.json())
        with self._lock:
            self._repo(t, repo_id, True)
            (self.root / t / f"{repo_id}.json").unlink()
        return 200, {}, {}

    def _validate_yaml(self, req):
        return 200, {}, {"errors": [], "warnings": []}

    def _info(self, req, t, repo_id, rev):
        repo, sha = self._repo(t, repo_id, req.authed, rev)
        commit, blobs = repo["commits"][sha], "blobs" in req.query
        siblings = [{"rfilename": p, **({"size": self._size(o), "blobId": o} if blobs else {})}
                    for p, o in sorted(commit["files"].items())]
        return 200, {}, {"id": repo_id, "author": repo_id.split("/")[0], "sha": sha, "private": repo["private"],
                         "gated": False, "disabled": False, "lastModified": commit["date"], "tags": [],
                         "createdAt": repo["createdAt"], "siblings": siblings, "sdk": repo["sdk"]}

    def _preupload(self, req, t, repo_id, rev, _):
        repo, sha = self._repo(t, repo_id, True, rev)
        files = repo["commits"][sha]["files"]  # with the current oid the client skips unchanged files
        return 200, {}, {"commitOid": sha, "files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
            for f in req.json()["files"]]}

    def _commit(self, req, t, repo_id, rev, _):
        if "create_pr" in req.query:
            raise HubError(400, "LoopbackHub does not support pull requests")
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        with self._lock:
            repo, sha = self._repo(t, repo_id, True, rev)
            if rev not in repo["refs"]:
                raise HubError(400, f"Can only commit to a branch, not {rev}")
            header = next(line["value"] for line in lines if line["key"] == "header")
            if header.get("parentCommit") not in (None, sha):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files, blobs = dict(repo["commits"][sha]["files"]), {}
            for op in (line for line in lines if line["key"] != "header"):
                key, path = op["key"], op["value"]["path"].strip("/")
                if key == "file":
                    data = base64.b64decode(op["value"]["content"])
                    files[path] = git_sha1(data)
                    blobs[files[path]] = data
                elif key == "deletedFile" and path in files:
                    del files[path]
                elif key == "deletedFolder" and any(p.startswith(path + "/") for p in files):
                    files = {p: o for p, o in files.items() if not p.startswith(path + "/")}
                elif key.startswith("deleted"):
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                else:
                    raise HubError(400, f"LoopbackHub does not support {key} operations (no LFS, no xet)")
            for oid, data in blobs.items():
                self._write(self.root / "blobs" / oid, data)
            new = self._add_commit(repo, rev, files, header["summary"], sha)
            self._write(self.root / t / f"{repo_id}.json", json.dumps(repo).encode())
        url = f"{self.endpoint}/{'' if t == 'models' else t + '/'}{repo_id}/commit/{new}"
        return 200, {}, {"success": True, "commitOid": new, "commitUrl": url, "pullRequestUrl": None}

    def _tree(self, req, t, repo_id, rev, folder):
        repo, sha = self._repo(t, repo_id, req.authed, rev)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        below = [p[len(prefix):].split("/") for p in repo["commits"][sha]["files"] if p.startswith(prefix)]
        if not below:
            raise HubError(404, f"{folder} does not exist on {rev}", "EntryNotFound", sha)
        depth = len if is_true(req.query.get("recursive")) else (lambda segments: 1)
        paths = {prefix + "/".join(s[:n]) for s in below for n in range(1, depth(s) + 1)}
        return 200, {}, self._entries(repo, sha, sorted(paths), is_true(req.query.get("expand")))

    def _paths_info(self, req, t, repo_id, rev, _):
        repo, sha = self._repo(t, repo_id, req.authed, rev)
        form, files = parse_qs(req.body.decode()), repo["commits"][sha]["files"]
        paths = [p.strip("/") for p in form.get("paths", [])]
        found = [p for p in paths if p in files or any(f.startswith(p + "/") for f in files)]
        return 200, {}, self._entries(repo, sha, found, is_true(form.get("expand")))

    def _resolve(self, req, t, repo_id, rev, path):
        repo, sha = self._repo(t, repo_id, req.authed, rev)
        oid = repo["commits"][sha]["files"].get(path)
        if oid is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", sha)
        data, status, spec = (self.root / "blobs" / oid).read_bytes(), 200, req.headers.get("Range", "")
        headers = {"ETag": f'"{oid}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if spec.startswith("bytes=") and "," not in spec:  # one range: a-b, a- or -suffix
            start, _, end = spec[6:].partition("-")
            if start:
                first, last = int(start), min(int(end or len(data)), len(data) - 1)
            else:
                first, last = max(0, len(data) - int(end)), len(data) - 1
            if not 0 <= first <= last:
                raise HubError(416, f"Range not satisfiable: {spec}")
            data, status, headers["Content-Range"] = data[first:last + 1], 206, f"bytes {first}-{last}/{len(data)}"
        return status, headers, data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients pool connections

    def log_message(self, *args):
        pass

    def json(self):
        return json.loads(self.body or b"{}")

    def _send(self, status, headers, body):
        if not isinstance(body, bytes):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        hub, url = self.server.hub, urlsplit(self.path)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # the clients never send chunked
        self.query = parse_qs(url.query)
        route = hub.route(self.command, [unquote(p) for p in url.path.split("/")[1:]])
        kind = route and route[0]
        with hub._lock:
            hub.requests.append((self.command, kind, url.path))
            if fault := next((f for f in hub._faults if f[0] == kind and f[1] > 0), None):
                fault[1] -= 1
        if fault and fault[2] is None:
            self.close_connection = True  # no answer at all: the client sees the connection drop
            return
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        self.authed = token == hub.token
        try:
            if fault:
                raise HubError(fault[2], f"LoopbackHub: injected failure of {kind}")
            if token is not None and not self.authed:
                raise HubError(401, "Invalid credentials in Authorization header")
            if route is None:
                hub.unknown.append(f"{self.command} {self.path}")
                raise HubError(404, f"LoopbackHub has no route for {self.command} {url.path}")
            if kind in NEEDS_TOKEN and not self.authed:
                raise HubError(401, "You must be authenticated (Authorization: Bearer <token>)")
            self._send(*route[1](self, *route[2]))
        except HubError as e:
            headers = {"X-Error-Message": str(e), **({"X-Error-Code": e.code} if e.code else {}),
                       **({"X-Repo-Commit": e.commit} if e.commit else {})}
            self._send(e.status, headers, {"error": str(e), **e.body})
        except Exception as e:  # a bug here or a request it cannot parse: tests see it in `unknown`
            hub.unknown.append(f"ERROR {self.command} {self.path}: {e!r}")
            self._send(500, {}, {"error": repr(e)})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle
