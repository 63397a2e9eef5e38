"""A Hugging Face hub on 127.0.0.1 for the push and ``hf-hub:`` tests: repositories with branches and commits,
answering the few endpoints ``huggingface_hub`` calls.

- ``POST /api/repos/create`` (``HfApi.create_repo``; 409 with the repository's URL when it exists),
- ``POST /api/models/{repo}/branch/{branch}`` (``create_branch``),
- ``POST /api/models/{repo}/preupload/{revision}`` (``upload_folder``): every file in "regular" mode, so the
  commit carries the bytes and no LFS or Xet endpoint is needed,
- ``POST /api/models/{repo}/commit/{revision}``: the NDJSON commit (a header line, then base64 files),
- ``POST /api/validate-yaml``: ``upload_folder`` sends a model card's metadata there first,
- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` (``hf_hub_download``): the ``X-Repo-Commit`` header and,
  as the real hub does, ``*.safetensors`` served as LFS files (``X-Linked-Etag``: their sha256) and the others
  with their git blob id as ``ETag``. A revision is a branch or a commit id; unknown ones get the hub's
  ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).

Written from the request/response shapes of ``huggingface_hub`` 2.4 (``hf_api.py``, ``_commit_api.py``,
``file_download.py``), not from the hub's server code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

import yaml


@dataclass
class Repo:
    private: bool
    branches: Dict[str, str] = field(default_factory=dict)  # branch -> commit id
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # commit id -> path -> bytes
    messages: Dict[str, str] = field(default_factory=dict)  # commit id -> summary

    def commit(self, files: Dict[str, bytes], message: str) -> str:
        digest = hashlib.sha1(message.encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha256(files[path]).digest())
        digest.update(str(len(self.commits)).encode())
        sha = digest.hexdigest()
        self.commits[sha], self.messages[sha] = dict(files), message
        return sha


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """The hub at ``url`` (set ``HF_ENDPOINT`` to it). ``repos`` holds the repositories, ``requests`` the
    ``(method, path)`` of every request, ``tokens`` the bearer tokens sent with writes."""

    def __init__(self) -> None:
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self.tokens: List[Optional[str]] = []
        self.validated: List[Dict[str, object]] = []  # model card metadata checked by /api/validate-yaml
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: object = None, headers: Optional[Dict[str, str]] = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                hub.requests.append(("POST", path))
                auth = self.headers.get("Authorization")
                hub.tokens.append(auth.split(" ", 1)[1] if auth else None)
                body = self._body()
                with hub.lock:
                    if path == "/api/repos/create":
                        return self._create(json.loads(body))
                    if path == "/api/validate-yaml":
                        return self._validate(json.loads(body)["content"])
                    parts = path.split("/")  # '', api, models, owner, name, action, revision...
                    repo_id, action, revision = "/".join(parts[3:5]), parts[5], "/".join(parts[6:])
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if action == "branch":
                        if revision in repo.branches:
                            return self._reply(409, {"error": "Branch already exists"})
                        repo.branches[revision] = repo.branches["main"]
                        return self._reply(200, {})
                    if revision not in repo.branches:
                        return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                        return self._reply(200, {"files": answer})
                    if action == "commit":
                        return self._commit(repo_id, repo, revision, body)
                return self._reply(404, {"error": f"no endpoint {path}"})

            def _create(self, payload: Dict[str, object]) -> None:
                repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
                url = f"{hub.url}/{repo_id}"
                if repo_id in hub.repos:
                    return self._reply(409, {"error": "You already created this model repo", "url": url})
                private = payload.get("private") is True or payload.get("visibility") == "private"
                repo = hub.repos[repo_id] = Repo(private=bool(private))
                repo.branches["main"] = repo.commit({".gitattributes": b"*.safetensors filter=lfs\n"}, "initial")
                return self._reply(200, {"url": url})

            def _validate(self, content: str) -> None:
                """A model card (README.md): its metadata block, a YAML mapping with a license (the hub checks more)."""
                if not content.startswith("---\n") or "\n---\n" not in content[3:]:
                    return self._reply(400, {"error": "no metadata block"})
                try:
                    meta = yaml.safe_load(content[4 : content.index("\n---\n", 3)])
                except yaml.YAMLError as error:
                    return self._reply(400, {"error": str(error)})
                if not isinstance(meta, dict) or not isinstance(meta.get("license"), str):
                    return self._reply(400, {"error": "metadata needs a license"})
                hub.validated.append(meta)
                return self._reply(200, {"errors": [], "warnings": []})

            def _commit(self, repo_id: str, repo: Repo, branch: str, body: bytes) -> None:
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = next(line["value"] for line in lines if line["key"] == "header")
                files = dict(repo.commits[repo.branches[branch]])
                for line in lines:
                    if line["key"] == "file":
                        files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    elif line["key"] != "header":
                        return self._reply(400, {"error": f"the fake hub takes regular files only, got {line['key']}"})
                sha = repo.commit(files, header["summary"])
                repo.branches[branch] = sha
                url = f"{hub.url}/{repo_id}/commit/{sha}"
                return self._reply(200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})

            def _resolve(self) -> Optional[bytes]:
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
                hub.requests.append((self.command, "/" + path))
                owner, name, resolve, revision, filename = (path.split("/", 4) + [""] * 5)[:5]
                repo = hub.repos.get(f"{owner}/{name}")
                if resolve != "resolve" or repo is None:
                    self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return None
                commit = repo.branches.get(revision, revision if revision in repo.commits else None)
                if commit is None:
                    self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                    return None
                data = repo.commits[commit].get(filename)
                if data is None:
                    headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
                    self._reply(404, {"error": "Entry not found"}, headers)
                    return None
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                if filename.endswith(".safetensors"):
                    digest = hashlib.sha256(data).hexdigest()
                    self.send_header("X-Linked-Etag", f'"{digest}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                    self.send_header("ETag", f'"{digest}"')
                else:
                    self.send_header("ETag", f'"{git_blob_id(data)}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return data

            def do_HEAD(self) -> None:  # noqa: N802
                self._resolve()

            def do_GET(self) -> None:  # noqa: N802
                data = self._resolve()
                if data is not None:
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def files(self, repo_id: str, revision: str = "main") -> Dict[str, bytes]:
        """The files of ``repo_id`` at a branch or commit."""
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(revision, revision)]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
