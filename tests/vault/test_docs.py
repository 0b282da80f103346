"""/docs: packaged Swagger UI under a strict CSP, and the bearer scheme it authorizes with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from vault.api import docs
from vault.app import create_app
from vault.context import Context

PROBLEM = "application/problem+json"
TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


class _Page(HTMLParser):
    """Collects what the page loads, and any inline script or style it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self._in_script = True
            if not a.get("src"):
                self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {k}=" for k in a if k == "style" or k.startswith("on")]
        self.refs += [v for k, v in a.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"script body {data.strip()[:40]!r}")


@pytest.fixture
def client(make_ctx: Callable[..., Context]) -> Iterator[TestClient]:
    ctx = make_ctx(db="sqlite")
    with TestClient(create_app(ctx.settings, ctx=ctx)) as c:
        yield c


def _page(client: TestClient) -> _Page:
    parsed = _Page()
    parsed.feed(client.get("/docs").text)
    return parsed


def test_docs_page_is_html_under_a_strict_csp(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert csp == docs.CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_docs_page_loads_only_same_origin_files_and_has_no_inline_code(
    client: TestClient,
) -> None:
    page = _page(client)
    assert page.inline == []
    assert "/docs/assets/swagger-ui-bundle.js" in page.refs
    assert "/docs/init.js" in page.refs
    for ref in page.refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref


def test_every_referenced_file_is_served_with_its_type(client: TestClient) -> None:
    for ref in _page(client).refs:
        r = client.get(ref)
        assert r.status_code == 200, ref
        suffix = ref[ref.rindex(".") :]
        assert r.headers["content-type"].split(";")[0] == TYPES[suffix], ref
        assert r.headers["x-content-type-options"] == "nosniff", ref
        assert r.content, ref


def test_init_script_loads_our_document_and_does_not_persist_the_key(client: TestClient) -> None:
    js = client.get("/docs/init.js").text
    assert 'url: "/openapi.json"' in js
    assert "persistAuthorization: false" in js


def test_assets_may_be_cached_but_the_page_is_revalidated(client: TestClient) -> None:
    assert "max-age" in client.get("/docs/assets/swagger-ui.css").headers["cache-control"]
    assert client.get("/docs").headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "name", ["index.html", "swagger-initializer.js", "swagger-ui.css.map", "oauth2-redirect.html"]
)
def test_a_bundle_file_outside_the_allow_list_is_not_found(client: TestClient, name: str) -> None:
    r = client.get(f"/docs/assets/{name}")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/not-found")


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/..%2finit.js",
        "/docs/assets/..%2f..%2fopenapi.json",
        "/docs/assets/..%2f..%2f..%2fpyproject.toml",
        "/docs/assets/%2e%2e%2fswagger-ui.css",
    ],
)
def test_a_traversal_attempt_is_not_found(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM


def test_docs_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")]


def test_openapi_declares_the_bearer_scheme_on_every_v1_operation(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    v1 = [(p, m, op) for p, item in doc["paths"].items() if p.startswith("/v1/")
          for m, op in item.items()]  # fmt: skip
    assert v1
    unprotected = [(p, m) for p, m, op in v1 if op.get("security") != [{"bearerAuth": []}]]
    assert unprotected == []


def test_the_packaged_swagger_ui_reads_our_openapi_version(client: TestClient) -> None:
    # FastAPI writes OpenAPI 3.1, which Swagger UI 4 refuses ("Unable to render this definition");
    # 5.x carries the isOAS31 selector.
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1.")
    assert b"isOAS31" in client.get("/docs/assets/swagger-ui-bundle.js").content
