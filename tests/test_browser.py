"""Open the built book in headless Chromium and check what a reader would see.

For ``_build/html/book/intro.html`` and every other page under
``_build/html/book/`` this test asserts that

(a) the equations are typeset: every Sphinx math element (``.math``) holds a
    MathJax ``mjx-container``, MathJax reported no TeX error, and no raw
    ``$$`` / ``$\\cmd ...$`` is left in the visible text;
(b) every ``<img>`` loaded (``naturalWidth > 0``);
(c) the page requested nothing outside the book: every request recorded by the
    Chrome DevTools Protocol (``Network.requestWillBeSent``) goes to the local
    HTTP server this test starts on 127.0.0.1 for ``_build/html`` (or to a
    ``file://`` URL under it, ``data:``, ``blob:`` or ``about:``), and no local
    request failed or returned an HTTP error (a missing MathJax font or
    component shows up here).

On chapter 2 (``book/02_amata.html``) it also moves the sliders of the
kernel-free schedule explorer (:func:`amata_lib.explorer.static_explorer_html`)
by setting their values and dispatching ``input`` events, and checks that the
K_t list, the alpha_t values, the cost ratio, the summary line and the
tau-below-eps warning the page shows are those :func:`amata_lib.explorer.explore`
computes in Python for the same settings.

The code that comes with the book: "Get the code" (``book/get_the_code.html``) links
every file of ``_build/html/downloads/`` that ``scripts/site_downloads.py`` made (the
source archive, the wheel, SHA256SUMS), each downloads from the local server with the
size and SHA-256 of its ``manifest.json``, and the archive and the wheel hold no file
that .gitignore ignores; a rendered source page of ``sphinx.ext.viewcode``
(``_modules/amata_lib/core/schedules.html``) renders offline like a page of the book, with
line numbers and the anchor the API reference's ``[source]`` link points to, and every
``{source}`` link of the book reaches an existing page and anchor; and with
``repository.url`` empty in ``_config.yml`` no page shows a launch button (Binder, Colab).

The pages are served over http://127.0.0.1 rather than file:// because
Chromium refuses web fonts (MathJax's woff files) from file:// pages.

Driver: Chromium's DevTools Protocol over a websocket (``websocket-client``);
no browser download.  The browser is Debian's ``/usr/bin/chromium`` (or
``$AMATA_CHROMIUM``); the test is skipped, with the reason, when no Chromium is
installed or when the book has not been built (``_build/html`` missing).

Screenshots: set ``AMATA_SCREENSHOT_DIR=/some/dir`` and each checked page is
saved there as a PNG (``book_intro.png`` ...).  Or, by hand::

    python tests/test_browser.py _build/html/book/intro.html /tmp/intro.png
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest

from amata_lib.book.explorer import STATIC_SHAPES, build_schedule, explore, summary
from amata_lib.infra.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
PAGE_TIMEOUT_S = 30.0
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
    "--window-size=1280,900",
]
LOCAL_SCHEMES = ("data:", "blob:", "about:")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    env = os.environ.get("AMATA_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = name if Path(name).is_file() else shutil.which(name)
        if path:
            return path
    return None


def book_pages() -> list[Path]:
    """intro.html first, then every other page under _build/html/book/."""
    book = HTML / "book"
    if not book.is_dir():
        return []
    pages = sorted(book.glob("*.html"))
    intro = book / "intro.html"
    return ([intro] if intro in pages else []) + [p for p in pages if p != intro]


# --------------------------------------------------------------------------- DevTools client
class CDPError(RuntimeError):
    pass


class Browser:
    """Headless Chromium driven over one DevTools websocket (flattened sessions)."""

    def __init__(self, executable: str):
        import websocket  # websocket-client

        self._websocket = websocket
        self.profile = tempfile.mkdtemp(prefix="amata-chromium-")
        cmd = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                self.close()
                raise CDPError(f"Chromium exited with {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                self.close()
                raise CDPError("Chromium did not write DevToolsActivePort within 30 s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=PAGE_TIMEOUT_S,
                                              suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = PAGE_TIMEOUT_S) -> dict:
        self._next_id += 1
        msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply is None:
                raise CDPError(f"{method}: no reply within {timeout} s")
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _recv(self, deadline: float) -> dict | None:
        """Next message; events are appended to self.events.  None on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.ws.settimeout(remaining)
        try:
            msg = json.loads(self.ws.recv())
        except self._websocket.WebSocketTimeoutException:
            return None
        if "method" in msg:
            self.events.append(msg)
        return msg

    def wait_event(self, method: str, session: str, timeout: float = PAGE_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return ev
            seen = len(self.events)
            if self._recv(deadline) is None:
                raise CDPError(f"no {method} within {timeout} s")

    def pump(self, seconds: float) -> None:
        """Collect events for a while (late requests such as fonts)."""
        deadline = time.monotonic() + seconds
        while self._recv(deadline) is not None:
            pass

    def evaluate(self, session: str, expression: str, timeout: float = PAGE_TIMEOUT_S):
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True, "timeout": timeout * 1000},
                        session=session, timeout=timeout + 5)
        if "exceptionDetails" in res:
            raise CDPError(f"JS error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                try:
                    self.send("Browser.close", timeout=5)
                except Exception:
                    pass
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


# --------------------------------------------------------------------------- page checks
WAIT_FOR_PAGE_JS = r"""
(async () => {
  // make every image load now (lazy images would never load off-screen)
  const imgs = Array.from(document.images);
  imgs.forEach(img => { img.loading = 'eager'; });
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  if (document.querySelector('.math') || window.MathJax) {
    const t0 = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (Date.now() - t0 > 20000) return 'MathJax never started';
      await new Promise(r => setTimeout(r, 50));
    }
    await MathJax.startup.promise;
  }
  await document.fonts.ready;
  return 'ok';
})()
"""

INSPECT_PAGE_JS = r"""
(() => {
  const maths = Array.from(document.querySelectorAll('.math'));
  const untypeset = maths.filter(m => !m.querySelector('mjx-container'))
                         .map(m => m.textContent.trim().slice(0, 80));
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, textarea, mjx-container, mjx-assistive-mml')
      .forEach(e => e.remove());
  const text = body.textContent;
  const attrs = [];
  for (const [sel, attr] of [['script[src]', 'src'], ['link[href]', 'href'], ['img[src]', 'src'],
                             ['iframe[src]', 'src'], ['source[src]', 'src'], ['video[src]', 'src'],
                             ['audio[src]', 'src'], ['embed[src]', 'src'], ['object[data]', 'data']]) {
    document.querySelectorAll(sel).forEach(e => attrs.push(e.getAttribute(attr)));
  }
  return {
    n_math: maths.length,
    n_mjx: document.querySelectorAll('mjx-container').length,
    untypeset: untypeset,
    merrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent.slice(0, 80)),
    raw_tex: (text.match(
      /\$\$[\s\S]{0,60}|\$[^$\n]{0,40}\\[a-zA-Z]+[^$\n]{0,40}\$|\\\([^)]{0,40}|\\\[[^\]]{0,40}/g) || []),
    broken_images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
                        .map(i => i.currentSrc || i.src),
    n_images: document.images.length,
    resource_attrs: attrs,
    title: document.title,
  };
})()
"""


class PageReport(dict):
    pass


@contextlib.contextmanager
def open_tab(browser: Browser, url: str) -> Iterator[tuple[str, int]]:
    """A fresh tab showing ``url`` after its load event: ``(session, index of its first event)``.

    The tab is closed and the recorded events are cleared on leaving.
    """
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Network", "Runtime"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        start = len(browser.events)
        nav = browser.send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {nav['errorText']}")
        browser.wait_event("Page.loadEventFired", session)
        yield session, start
    finally:
        browser.send("Target.closeTarget", {"targetId": target})
        browser.events.clear()


def exceptions_in(browser: Browser, session: str, start: int) -> list[str]:
    """The uncaught JavaScript exceptions of ``session`` recorded since event ``start``."""
    return [e["params"]["exceptionDetails"].get("exception", {}).get("description")
            or e["params"]["exceptionDetails"].get("text")
            for e in browser.events[start:]
            if e.get("sessionId") == session and e["method"] == "Runtime.exceptionThrown"]


def check_page(browser: Browser, url: str, screenshot: Path | None = None) -> PageReport:
    """Load ``url`` in a fresh tab; return what was seen (requests, DOM facts)."""
    with open_tab(browser, url) as (session, start):
        status = browser.evaluate(session, WAIT_FOR_PAGE_JS)
        browser.pump(0.3)  # late requests (fonts, MathJax components)
        info = browser.evaluate(session, INSPECT_PAGE_JS)
        if screenshot is not None:
            save_screenshot(browser, session, screenshot)
        events = [e for e in browser.events[start:] if e.get("sessionId") == session]
        requests = {e["params"]["requestId"]: e["params"]["request"]["url"]
                    for e in events if e["method"] == "Network.requestWillBeSent"}
        failed = [(requests.get(e["params"]["requestId"], "?"), e["params"].get("errorText"))
                  for e in events if e["method"] == "Network.loadingFailed"
                  and not e["params"].get("canceled")]
        http_errors = [(e["params"]["response"]["url"], e["params"]["response"]["status"])
                       for e in events if e["method"] == "Network.responseReceived"
                       and e["params"]["response"].get("status", 0) >= 400
                       # the browser asks for /favicon.ico by itself; the book has none
                       and not e["params"]["response"]["url"].endswith("/favicon.ico")]
        return PageReport(status=status, requests=sorted(set(requests.values())), failed=failed,
                          http_errors=http_errors, exceptions=exceptions_in(browser, session, start), **info)


def save_screenshot(browser: Browser, session: str, path: Path, max_height: int = 8000) -> None:
    """Full-page PNG (cut at max_height pixels).

    The viewport is made as tall as the page first: ``captureBeyondViewport``
    re-lays out pages whose code blocks scroll horizontally, shifting them.
    """
    metrics = browser.send("Page.getLayoutMetrics", session=session)
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    height = int(min(size["height"], max_height))
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    browser.pump(0.3)
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


# --------------------------------------------------------------------------- local server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


class LocalServer:
    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, page: Path) -> str:
        return self.base + quote(page.relative_to(HTML).as_posix())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def is_inside_book(url: str, server_base: str) -> bool:
    if url.startswith(LOCAL_SCHEMES) or url.startswith(server_base):
        return True
    return url.startswith("file://") and url[len("file://"):].startswith(str(HTML))


# --------------------------------------------------------------------------- pytest
PAGES = book_pages()


def _skip(reason: str) -> None:
    """Skip with ``reason``; CI sets AMATA_REQUIRE_BROWSER=1 so a missing browser or book fails instead."""
    if os.environ.get("AMATA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser check required (AMATA_REQUIRE_BROWSER=1) but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not HTML.is_dir():
        _skip(f"book not built: {HTML.relative_to(ROOT)} does not exist (run `make book` "
                    "or `bash scripts/build_book.sh` first)")
    exe = find_chromium()
    if exe is None:
        _skip("Chromium not found (install it, e.g. `apt-get install -y chromium`, "
                    "or set AMATA_CHROMIUM=/path/to/chromium)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _skip("websocket-client not installed (pip install websocket-client)")
    b = Browser(exe)
    yield b
    b.close()


@pytest.fixture(scope="module")
def server():
    if not HTML.is_dir():
        _skip(f"book not built: {HTML.relative_to(ROOT)} does not exist")
    s = LocalServer(HTML)
    yield s
    s.close()


def test_intro_page_exists():
    if not HTML.is_dir():
        _skip(f"book not built: {HTML.relative_to(ROOT)} does not exist (run `make book` first)")
    assert (HTML / "book" / "intro.html").is_file(), "the book's root page book/intro.html was not built"


@pytest.mark.parametrize("page", PAGES or [None], ids=[p.stem for p in PAGES] or ["no-pages"])
def test_page_renders_offline(page, browser, server):
    if page is None:
        _skip("no pages under _build/html/book/")
    shot_dir = os.environ.get("AMATA_SCREENSHOT_DIR")
    shot = Path(shot_dir) / f"book_{page.stem}.png" if shot_dir else None
    rep = check_page(browser, server.url(page), screenshot=shot)
    name = page.relative_to(HTML).as_posix()
    assert_renders_offline(rep, name, server)
    if page.name == "intro.html":
        assert rep["n_mjx"] > 0, "intro.html should show typeset math (Eq. 1) but has no mjx-container"


def assert_renders_offline(rep: PageReport, name: str, server: LocalServer) -> None:
    """What every page must show: (a) math typeset, (b) images loaded, (c) nothing from outside the book."""
    assert rep["status"] == "ok", f"{name}: {rep['status']}"
    # (c) nothing outside the book, and nothing local missing
    external = [u for u in rep["requests"] if not is_inside_book(u, server.base)]
    assert not external, f"{name} requested URLs outside the book:\n  " + "\n  ".join(external)
    external_attrs = [a for a in rep["resource_attrs"]
                      if re.match(r"^([a-z][a-z0-9+.-]*:)?//", a or "", re.I)
                      and not is_inside_book(a, server.base)]
    assert not external_attrs, f"{name} has resource tags pointing outside the book: {external_attrs}"
    assert not rep["failed"], f"{name}: requests failed: {rep['failed']}"
    assert not rep["http_errors"], f"{name}: HTTP errors: {rep['http_errors']}"
    assert not rep["exceptions"], f"{name}: JavaScript exceptions: {rep['exceptions']}"
    # (a) math typeset
    assert not rep["untypeset"], f"{name}: math not typeset by MathJax: {rep['untypeset']}"
    assert not rep["merrors"], f"{name}: MathJax TeX errors: {rep['merrors']}"
    assert rep["n_mjx"] >= rep["n_math"], f"{name}: {rep['n_math']} math elements, {rep['n_mjx']} typeset"
    assert not rep["raw_tex"], f"{name}: raw TeX left in the visible text: {rep['raw_tex']}"
    # (b) images
    assert not rep["broken_images"], f"{name}: images that did not load: {rep['broken_images']}"


# --------------------------------------------------------------------------- the code in the site
GET_THE_CODE = HTML / "book" / "get_the_code.html"
DOWNLOADS = HTML / "downloads"
VIEWCODE_PAGE = HTML / "_modules" / "amata_lib" / "core" / "schedules.html"
# never in the source archive, whatever .gitignore says (it ignores them all)
NEVER_SHIPPED = re.compile(r"(^|/)(\.venv|_build|\.build|__pycache__|\.pytest_cache|\.jupyter_cache|node_modules)/"
                           r"|(^|/)data/mnist|\.egg-info/|\.pyc$")
LAUNCH_JS = r"""
Array.from(document.querySelectorAll(
  '.dropdown-launch-buttons, a[href*="mybinder.org"], a[href*="colab.research.google.com"], ' +
  'a[href*="/hub/user-redirect/"], a[href*="deepnote.com"], .thebe-launch-button'))
  .map(e => e.outerHTML.slice(0, 120))
"""
LINKS_JS = r"""
Array.from(document.querySelectorAll('a[href]')).map(a => ({href: a.href, cls: a.className,
                                                            text: a.textContent.trim()}))
"""


def _manifest() -> dict:
    path = DOWNLOADS / "manifest.json"
    if not path.is_file():
        _skip(f"{path.relative_to(ROOT)} not built (scripts/site_downloads.py, run by `make book`)")
    return json.loads(path.read_text())


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=PAGE_TIMEOUT_S) as reply:
        assert reply.status == 200, f"{url}: HTTP {reply.status}"
        return reply.read()


def _ignored_by_git(paths: list[str]) -> list[str]:
    """Those of ``paths`` that the repository's .gitignore ignores (none checked without git)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists() or not paths:
        return []
    res = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                         input="\n".join(paths) + "\n", capture_output=True, text=True)
    return res.stdout.split()


def test_get_the_code_links_every_download(browser, server):
    if not GET_THE_CODE.is_file():
        _skip(f"{GET_THE_CODE.relative_to(ROOT)} not built")
    manifest = _manifest()
    with open_tab(browser, server.url(GET_THE_CODE)) as (session, start):
        links = browser.evaluate(session, LINKS_JS)
        text = browser.evaluate(session, "document.body.innerText")
    linked = {unquote(urlsplit(a["href"]).path).rsplit("/", 1)[-1]: a["href"] for a in links
              if "amata-download" in a["cls"].split()}
    files = manifest["files"]
    assert set(files) == {"source", "wheel", "sums"}
    for key, entry in files.items():
        if "skipped" in entry:
            assert key == "source" and f"not in this build: {entry['skipped']}" in text
            continue
        assert entry["name"] in linked, f"Get the code does not link {entry['name']}: {sorted(linked)}"
        url = linked[entry["name"]]
        assert url.startswith(server.base + "downloads/"), url
        assert (DOWNLOADS / entry["name"]).is_file()
        data = _fetch(url)
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
    sums = _fetch(server.base + "downloads/SHA256SUMS").decode().splitlines()
    assert sorted(sums) == sorted(f"{f['sha256']}  {f['name']}" for k, f in files.items()
                                  if k != "sums" and "name" in f)
    for command in ("pip install amata_lib-*.whl", "make book", "make test", "python -m amata_lib --help",
                    "data/mnist/"):
        assert command in text, f"Get the code does not say {command!r}"


def test_the_archive_and_the_wheel_hold_only_what_git_tracks(server):
    manifest = _manifest()
    wheel = manifest["files"]["wheel"]
    with zipfile.ZipFile(io.BytesIO(_fetch(server.base + "downloads/" + quote(wheel["name"])))) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert wheel["name"].startswith(f"amata_lib-{manifest['version']}-") and wheel["name"].endswith(".whl")
    assert f"Version: {manifest['version']}" in meta and "Name: amata_lib" in meta
    assert {"amata_lib/__init__.py", "amata_lib/core/schedules.py", "amata_lib/book/explorer.js"} <= set(names)
    assert any(n.startswith("amata_lib/configs/") and n.endswith(".json") for n in names)
    assert all(n.startswith(("amata_lib/", "amata_lib-")) and not NEVER_SHIPPED.search(n) for n in names)
    source = manifest["files"]["source"]
    if "skipped" in source:
        return
    with tarfile.open(fileobj=io.BytesIO(_fetch(server.base + "downloads/" + quote(source["name"])))) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
    prefix = source["name"].removesuffix(".tar.gz") + "/"
    assert members and all(m.startswith(prefix) for m in members)
    inside = [m[len(prefix):] for m in members]
    assert {"Makefile", "pyproject.toml", "_config.yml", "amata_lib/__init__.py", "book/intro.ipynb"} <= set(inside)
    assert not [m for m in inside if NEVER_SHIPPED.search(m)]
    assert not _ignored_by_git(inside), _ignored_by_git(inside)


def test_a_rendered_source_page(browser, server):
    if not VIEWCODE_PAGE.is_file():
        _skip(f"{VIEWCODE_PAGE.relative_to(ROOT)} not built (sphinx.ext.viewcode)")
    rep = check_page(browser, server.url(VIEWCODE_PAGE))
    assert_renders_offline(rep, VIEWCODE_PAGE.relative_to(HTML).as_posix(), server)
    with open_tab(browser, server.url(VIEWCODE_PAGE)) as (session, start):
        seen = browser.evaluate(session, r"""({
          h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.trim()),
          code: document.querySelector('.highlight pre').textContent,
          linenos: document.querySelectorAll('.highlight .linenos').length,
          amata: !!document.getElementById('Amata'),
          back: Array.from(document.querySelectorAll('#Amata a.viewcode-back')).map(a => a.href),
        })""")
    assert "Source code for amata_lib.core.schedules" in seen["h1"], seen["h1"]
    source = (ROOT / "amata_lib" / "core" / "schedules.py").read_text()
    assert "class Amata(_Annealed):" in seen["code"]
    assert seen["linenos"] == len(source.splitlines()), "the rendered source has one line number per line"
    assert seen["amata"] and seen["back"] and "api_core.html#amata_lib.core.schedules.Amata" in seen["back"][0]
    api = (HTML / "book" / "api_core.html").read_text()
    assert 'href="../_modules/amata_lib/core/schedules.html#Amata"' in api, "no [source] link to Amata"


def test_every_module_has_a_rendered_source_and_every_source_link_lands():
    if not (HTML / "_modules").is_dir():
        _skip("_build/html/_modules not built")
    modules = sorted((ROOT / "amata_lib").rglob("*.py"))
    for path in modules:
        rel = path.relative_to(ROOT).with_suffix("")
        page = HTML / "_modules" / (rel.parent if rel.name == "__init__" else rel).with_suffix(".html")
        assert page.is_file(), f"no rendered source of {path.relative_to(ROOT)} ({page.relative_to(HTML)})"
    links = 0
    for page in sorted((HTML / "book").glob("*.html")):
        for href in re.findall(r'<a class="amata-source[^"]*" href="([^"]+)"', page.read_text()):
            links += 1
            target, _, anchor = urljoin(page.relative_to(HTML).as_posix(), href).partition("#")
            landed = HTML / target
            assert landed.is_file(), f"{page.name}: {href} does not exist"
            if anchor:
                assert f'id="{anchor}"' in landed.read_text(), f"{page.name}: {href} has no anchor {anchor}"
    assert links >= 5  # Get the code's and the API reference's


def test_no_launch_button_without_a_repository_url(browser, server):
    yaml = pytest.importorskip("yaml")
    url = ((yaml.safe_load((ROOT / "_config.yml").read_text()) or {}).get("repository") or {}).get("url") or ""
    if url:
        pytest.skip(f"repository.url is set ({url}): the launch buttons are meant to show")
    if not PAGES:
        _skip("no pages under _build/html/book/")
    for page in [*PAGES, *sorted((HTML / "_modules").rglob("*.html"))]:
        html = page.read_text()
        assert "dropdown-launch-buttons" not in html and "mybinder.org" not in html \
            and "colab.research.google.com" not in html, f"{page.relative_to(HTML)} shows a launch button"
    with open_tab(browser, server.url(EXPLORER_PAGE)) as (session, start):  # a chapter, as the browser shows it
        assert browser.evaluate(session, LAUNCH_JS) == []
        header = browser.evaluate(session, "document.querySelector('.article-header-buttons').innerText")
    assert "Binder" not in header and "Colab" not in header and "Launch" not in header


# --------------------------------------------------------------------------- chapter 2's kernel-free explorer
EXPLORER_PAGE = HTML / "book" / "02_amata.html"
EXPLORER = "amata-explorer"  # the prefix chapter 2 gives static_explorer_html
EXPLORER_DEFAULTS = {"shape": "linear", "k_min": 2, "k_max": 10, "tau": 0.5, "eps": 0.2, "epochs": 30}
EXPLORER_CASES = [  # each field differs from the defaults somewhere; two warn, one is invalid
    {"shape": "exponential", "k_min": 1, "k_max": 16, "tau": 1.0, "eps": 0.3, "epochs": 50},
    {"shape": "step", "k_min": 3, "k_max": 12, "tau": 0.8, "eps": 0.25, "epochs": 7},
    {"shape": "constant", "k_min": 5, "k_max": 7, "tau": 0.35, "eps": 0.1, "epochs": 12},
    {"shape": "linear", "k_min": 1, "k_max": 40, "tau": 0.1, "eps": 0.2, "epochs": 200},
    {"shape": "step", "k_min": 4, "k_max": 5, "tau": 2.0, "eps": 1.0, "epochs": 3},
    {"shape": "linear", "k_min": 6, "k_max": 6, "tau": 0.01, "eps": 0.01, "epochs": 1},
    {"shape": "exponential", "k_min": 2, "k_max": 10, "tau": 0.5, "eps": 0.2, "epochs": 30},
    {"shape": "constant", "k_min": 3, "k_max": 9, "tau": 0.2, "eps": 0.47, "epochs": 5},
    {"shape": "linear", "k_min": 30, "k_max": 10, "tau": 0.5, "eps": 0.2, "epochs": 30},
]
EXPLORER_SWEEP = [{"shape": shape, "k_min": k_min, "k_max": k_max, "tau": 0.37, "eps": 0.2, "epochs": epochs}
                  for shape in STATIC_SHAPES
                  for k_min, k_max in [(1, 1), (1, 2), (2, 10), (3, 17), (1, 40), (7, 40)]
                  for epochs in (1, 2, 3, 5, 13, 30, 100, 200)]

# Called with the explorer's prefix and a list of settings: reads the explorer as loaded, then
# for each settings moves every slider (value + `input` event) and reads it again.
DRIVE_EXPLORER_JS = r"""
((prefix, runs) => {
  const el = name => document.getElementById(prefix + '-' + name);
  const names = ['shape', 'k_min', 'k_max', 'tau', 'eps', 'epochs'];
  const read = () => ({
    sliders: Object.fromEntries(names.map(n => [n, el(n).value])),
    shape: el('shape-value').textContent,
    steps_text: el('steps').textContent,
    steps: JSON.parse(el('steps').dataset.values),
    alpha: JSON.parse(el('alpha').dataset.values),
    ratio: JSON.parse(el('summary').dataset.costRatio),
    summary: el('summary').textContent,
    warning: el('warning').textContent,
    n_lines: el('plot').querySelectorAll('svg polyline').length,
  });
  const out = [read()];
  for (const settings of runs) {
    for (const name of names) {
      el(name).value = String(settings[name]);
      el(name).dispatchEvent(new Event('input', {bubbles: true}));
    }
    out.push(read());
  }
  return out;
})
"""


def slider_values(settings: dict) -> dict:
    """What the explorer's sliders read for ``settings`` (``input.value`` strings; shape is an index)."""
    numbers = {k: f"{v:g}" for k, v in settings.items() if k != "shape"}
    return {"shape": str(STATIC_SHAPES.index(settings["shape"])), **numbers}


def drive_explorer(browser: Browser, url: str, settings: list[dict]) -> list[dict]:
    """Readouts of the explorer on page ``url``: as loaded, then after each of ``settings``; no JS exception."""
    with open_tab(browser, url) as (session, start):
        runs = [slider_values(s) for s in settings]
        readouts = browser.evaluate(session, f"{DRIVE_EXPLORER_JS}({json.dumps(EXPLORER)}, {json.dumps(runs)})")
        assert not exceptions_in(browser, session, start), exceptions_in(browser, session, start)
    return readouts


def expected_readout(settings: dict) -> dict:
    """What amata_lib computes for ``settings`` (an invalid setting gives the error message)."""
    numbers = {k: v for k, v in settings.items() if k != "shape"}
    try:
        result = explore(build_schedule(settings["shape"], **numbers), eps=settings["eps"], k_ref=settings["k_max"])
    except UserError as exc:
        return {"steps": [], "alpha": [], "ratio": None, "warning": "", "summary": f"invalid settings: {exc}"}
    return {"steps": result.steps.tolist(), "alpha": result.alpha.tolist(), "ratio": result.cost_ratio,
            "warning": result.warning, "summary": summary(result).splitlines()[0].split(": ", 1)[1]}


def assert_readout(seen: dict, settings: dict, compare_text: bool) -> None:
    """``seen`` (read from the page) shows what amata_lib computes for ``settings``, to the last bit."""
    want = expected_readout(settings)
    label = json.dumps(settings)
    assert seen["sliders"] == slider_values(settings), label
    assert seen["shape"].startswith(settings["shape"]), label
    for key in ("steps", "alpha", "ratio", "warning"):
        assert seen[key] == want[key], f"{label}: {key} {seen[key]} != {want[key]}"
    assert seen["steps_text"] == ", ".join(map(str, want["steps"])), label
    assert seen["n_lines"] == (6 if want["steps"] else 0), label
    if compare_text:  # toFixed(3) and Python's .3f differ on exact binary ties only; none here
        summary_text = seen["summary"] if want["ratio"] is None else seen["summary"].split(": ", 1)[1]
        assert summary_text == want["summary"], label


def test_static_explorer_matches_the_library(browser, server):
    if not EXPLORER_PAGE.is_file():
        _skip(f"{EXPLORER_PAGE.relative_to(ROOT)} not built")
    readouts = drive_explorer(browser, server.url(EXPLORER_PAGE), EXPLORER_CASES)
    assert len(readouts) == len(EXPLORER_CASES) + 1
    for seen, settings in zip(readouts, [EXPLORER_DEFAULTS, *EXPLORER_CASES]):
        assert_readout(seen, settings, compare_text=True)
    assert readouts[4]["warning"] and readouts[8]["warning"]  # tau = 0.1 < eps = 0.2; tau = 0.2 < eps = 0.47
    assert readouts[9]["summary"].startswith("invalid settings: k_min")


def test_static_explorer_sweep_matches_the_library(browser, server):
    if not EXPLORER_PAGE.is_file():
        _skip(f"{EXPLORER_PAGE.relative_to(ROOT)} not built")
    readouts = drive_explorer(browser, server.url(EXPLORER_PAGE), EXPLORER_SWEEP)
    for seen, settings in zip(readouts[1:], EXPLORER_SWEEP, strict=True):
        assert_readout(seen, settings, compare_text=False)


# --------------------------------------------------------------------------- manual use
def main(argv: list[str]) -> int:
    """python tests/test_browser.py PAGE.html [OUT.png] -- print the report, save a screenshot."""
    if not argv:
        print(main.__doc__)
        return 2
    page = Path(argv[0]).resolve()
    out = Path(argv[1]) if len(argv) > 1 else None
    exe = find_chromium()
    if exe is None:
        print("Chromium not found", file=sys.stderr)
        return 1
    srv, b = LocalServer(HTML), Browser(exe)
    try:
        rep = check_page(b, srv.url(page), screenshot=out)
    finally:
        b.close()
        srv.close()
    print(json.dumps({k: v for k, v in rep.items() if k != "resource_attrs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
