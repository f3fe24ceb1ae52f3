"""The book's own Sphinx extension: links to the library's rendered source, the download files,
the front door of the API reference, and launch buttons that exist only with a public URL.

_config.yml loads it (``sphinx: local_extensions: amata_site: book/_ext``). It gives

``{source}`` (a role): a link to the rendered copy of a file of ``amata_lib`` that
    ``sphinx.ext.viewcode`` writes under ``_build/html/_modules/``::

        {source}`core/schedules.py`                 -> amata_lib/core/schedules.py
        {source}`amata_lib/core/schedules.py`       the same
        {source}`amata_lib.core.schedules`          the same, by module name
        {source}`core/schedules.py#Constant.plan`   -> amata_lib/core/schedules.py::Constant.plan, at its line
        {source}`the schedules <core/schedules.py>` your own text

    A file that does not exist, or an object that is not defined in it, is a warning (so
    ``-W`` fails the build); ``#Object`` needs the object to be in the API reference, which
    is where the rendered source's anchors come from. Every module of ``amata_lib`` has a
    rendered page, even one that defines no function or class.

``{download-file}`` (a role): ``source``, ``wheel`` or ``sums``, a link to that file under
    ``_build/html/downloads/`` with its name and size, from the ``manifest.json`` that
    ``scripts/site_downloads.py`` writes; a file the script skipped (no ``.git``) shows why.

``front-door`` (a directive, inside ``{eval-rst}``): a table of ``amata_lib.__all__``, each
    name linked to where it is defined, with the first paragraph of its docstring.

Names in docstrings link as Python resolves them in their module (``missing-reference``):
``:func:`amata_lib.train``` goes to where the front door's ``train`` is defined, and ``Plan``
as a parameter's type in a module that imports it to ``amata_lib.core.schedules.Plan``. A
pydantic model's signature shows its field names, not pydantic's generated ``__init__``, and
pydantic's own attributes are left out. Every module of ``amata_lib`` (but ``__main__``) must
be in the API reference, or the build fails.

Autodoc imports ``amata_lib`` from this repository (its root goes first on ``sys.path``) and
viewcode renders the files of this repository, never those of an installed copy.
With ``repository.url`` empty in _config.yml every launch button is switched off, so none
shows; with a URL, the theme makes the Binder and Colab buttons configured there.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from docutils import nodes
from sphinx.errors import SphinxError
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import ReferenceRole, SphinxDirective
from sphinx.util.osutil import relative_uri

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "amata_lib"
NOT_IN_API = {f"{PACKAGE}.__main__"}  # running it starts the command line
DOWNLOADS = ROOT / ".build" / "site" / "downloads"
DOWNLOAD_KEYS = ("source", "wheel", "sums")
LAUNCH_PROVIDERS = ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url", "jupyterlite_url")

if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the library's files
@functools.lru_cache(maxsize=1)
def module_files() -> dict[str, Path]:
    """Module name -> file, for every module of the package in this repository."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def module_of(target: str) -> str:
    """``core/schedules.py``, ``amata_lib/core/schedules.py`` or ``amata_lib.core.schedules`` -> module name."""
    if target.endswith(".py") or "/" in target:
        rel = target.removeprefix(f"{PACKAGE}/").removesuffix(".py").removesuffix("/__init__")
        return ".".join([PACKAGE, *[p for p in rel.split("/") if p]]) if rel != "__init__" else PACKAGE
    return target if target == PACKAGE or target.startswith(PACKAGE + ".") else f"{PACKAGE}.{target}"


def file_label(modname: str, path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path else modname


def find_source(app, modname: str):
    """``viewcode-find-source``: the code and tags of a module of this repository, read without importing it."""
    path = module_files().get(modname)
    if path is None:
        return None
    analyzer = ModuleAnalyzer.for_file(str(path), modname)
    return analyzer.code, analyzer.find_tags()


class source_link(nodes.Inline, nodes.TextElement):
    """A link to ``_modules/<module>.html#<anchor>``, made into a reference after reading."""


class download_link(nodes.Inline, nodes.TextElement):
    """A link to ``downloads/<filename>``, made into a reference after reading."""


class SourceRole(ReferenceRole):
    def run(self):
        target, _, anchor = self.target.partition("#")
        modname = module_of(target.strip())
        path = module_files().get(modname)
        text = self.title if self.has_explicit_title else \
            file_label(modname, path) + (f"::{anchor}" if anchor else "")
        literal = nodes.literal(text, text) if not self.has_explicit_title else nodes.Text(text)
        if path is None:
            logger.warning("{source}: %r is no file of %s/ (write e.g. core/schedules.py)", self.target, PACKAGE,
                           location=self.get_location(), type="amata", subtype="source")
            return [literal], []
        if anchor and anchor not in find_source(None, modname)[1]:
            logger.warning("{source}: %s defines no function or class %r", file_label(modname, path), anchor,
                           location=self.get_location(), type="amata", subtype="source")
            return [literal], []
        node = source_link(self.rawtext, "", literal, modname=modname, anchor=anchor, refdoc=self.env.docname)
        self.set_source_info(node)
        return [node], []


def read_manifest() -> dict | None:
    try:
        return json.loads((DOWNLOADS / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


class DownloadRole(ReferenceRole):
    def run(self):
        key = self.target.strip()
        self.env.note_dependency(str(DOWNLOADS / "manifest.json"))
        manifest = read_manifest()
        entry = (manifest or {}).get("files", {}).get(key)
        if key not in DOWNLOAD_KEYS or manifest is None or entry is None:
            why = (f"unknown file {key!r} (one of {', '.join(DOWNLOAD_KEYS)})" if key not in DOWNLOAD_KEYS else
                   f"no {DOWNLOADS.relative_to(ROOT)}/manifest.json: run scripts/site_downloads.py "
                   "(scripts/build_book.sh does)")
            logger.warning("{download-file}: %s", why, location=self.get_location(), type="amata", subtype="download")
            return [nodes.literal(key, key)], []
        if "skipped" in entry:
            text = f"(not in this build: {entry['skipped']})"
            return [nodes.emphasis(text, text)], []
        if not (DOWNLOADS / entry["name"]).is_file():
            logger.warning("{download-file}: %s is listed in manifest.json but missing", entry["name"],
                           location=self.get_location(), type="amata", subtype="download")
        size = f"{entry['bytes'] / 1e6:.1f} MB" if entry["bytes"] >= 1e5 else f"{entry['bytes'] / 1e3:.1f} kB"
        name = self.title if self.has_explicit_title else entry["name"]
        node = download_link(self.rawtext, "", nodes.literal(name, name), filename=entry["name"],
                             refdoc=self.env.docname)
        self.set_source_info(node)
        return [node, nodes.Text(f" ({size})")], []


class ResolveSiteLinks(SphinxPostTransform):
    """``source_link`` and ``download_link`` -> references relative to the page (HTML builders only)."""

    default_priority = 50

    def run(self, **kwargs):
        builder = self.app.builder
        html = builder.format == "html" and builder.name != "singlehtml"
        modules = getattr(self.env, "_viewcode_modules", {})
        for node in list(self.document.findall(source_link)):
            entry = modules.get(node["modname"])
            if not entry:
                logger.warning("{source}: no rendered source of %s", node["modname"], location=node,
                               type="amata", subtype="source")
            elif node["anchor"] and node["anchor"] not in entry[2]:
                logger.warning("{source}: %s.%s is not in the API reference, so its rendered source has no "
                               "anchor for it", node["modname"], node["anchor"], location=node,
                               type="amata", subtype="source")
            if not html or not entry:
                node.replace_self(node.children)
                continue
            uri = builder.get_relative_uri(node["refdoc"], "_modules/" + node["modname"].replace(".", "/"))
            node.replace_self(nodes.reference("", "", *node.children, internal=True, classes=["amata-source"],
                                              refuri=uri + (f"#{node['anchor']}" if node["anchor"] else "")))
        for node in list(self.document.findall(download_link)):
            if not html:
                node.replace_self(node.children)
                continue
            uri = relative_uri(builder.get_target_uri(node["refdoc"]), "downloads/" + node["filename"])
            node.replace_self(nodes.reference("", "", *node.children, internal=True, classes=["amata-download"],
                                              refuri=uri))


# --------------------------------------------------------------------------- the rendered source of every module
def render_every_module(app, env):
    """``env-updated``: give viewcode every module of the package, also those that define no function or class.

    viewcode renders the modules its ``[source]`` links point into; a package's ``__init__.py``
    that only imports names would have no page. Its record of modules is private
    (``env._viewcode_modules``), so a change of its shape stops the build here.
    """
    modules = getattr(env, "_viewcode_modules", None)
    if modules is None:
        env._viewcode_modules = modules = {}
    for modname in module_files():
        entry = modules.get(modname)
        if entry:
            if not (isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[2], dict)):
                raise SphinxError(f"amata_site: sphinx.ext.viewcode's module record changed ({modname}: "
                                  f"{type(entry).__name__}); update render_every_module")
            continue
        code, tags = find_source(app, modname)
        modules[modname] = (code, tags, {}, modname)
    return []


def check_api_is_complete(app, env):
    """``env-check-consistency``: every module of the package is in the API reference, and the right copy."""
    import amata_lib

    if Path(amata_lib.__file__).resolve().parent != ROOT / PACKAGE:
        logger.warning("autodoc imported %s from %s, not from %s", PACKAGE, amata_lib.__file__, ROOT / PACKAGE,
                       type="amata", subtype="api")
    documented = set(env.get_domain("py").modules)
    missing = sorted(set(module_files()) - documented - NOT_IN_API)
    if missing:
        logger.warning("modules missing from the API reference (book/api*.md): %s", ", ".join(missing),
                       type="amata", subtype="api")


# --------------------------------------------------------------------------- the front door
class FrontDoor(SphinxDirective):
    """A table of ``amata_lib.__all__``: each name, where it is defined, its docstring's first paragraph.

    Each row is parsed in its object's module, so the names in a summary link as they do in
    the docstring itself.
    """

    has_content = False

    def run(self):
        import inspect

        import amata_lib

        rows = [[nodes.paragraph(text=head)] for head in ("Name", "Defined in", "What it is")]
        body = []
        saved = self.env.ref_context.get("py:module")
        try:
            for name in amata_lib.__all__:
                if name.startswith("__"):
                    continue
                obj = getattr(amata_lib, name)
                self.env.ref_context["py:module"] = obj.__module__
                doc = inspect.getdoc(obj) or ""
                first = " ".join(doc.split("\n\n")[0].split())
                cells = [f":py:obj:`{name} <{obj.__module__}.{obj.__qualname__}>`", f":py:mod:`{obj.__module__}`",
                         first]
                body.append([self.parse_text_to_nodes(text) for text in cells])
        finally:
            if saved is None:
                self.env.ref_context.pop("py:module", None)
            else:
                self.env.ref_context["py:module"] = saved
        table, group = nodes.table(classes=["amata-front-door"]), nodes.tgroup(cols=3)
        table += group
        group += [nodes.colspec(colwidth=w) for w in (2, 3, 7)]

        def row(cells):
            out = nodes.row()
            for cell in cells:
                out += nodes.entry("", *cell)
            return out

        group += nodes.thead("", row(rows))
        group += nodes.tbody("", *[row(cells) for cells in body])
        return [table]


# --------------------------------------------------------------------------- autodoc: front-door names, pydantic models
def defined_at(modname: str | None, classname: str | None, target: str) -> str | None:
    """Where the name ``target`` used in module ``modname`` (in class ``classname``) is defined, as Python
    finds it there: ``Plan`` in ``amata_lib.study.criterion`` -> ``amata_lib.core.schedules.Plan``."""
    import importlib

    if not modname or not modname.startswith(PACKAGE):
        return None
    try:
        scope = importlib.import_module(modname)
    except ImportError:
        return None
    heads = [getattr(scope, classname, None)] if classname else []
    for head in [*heads, scope]:
        obj = head
        for part in target.split("."):
            obj = getattr(obj, part, None)
        where = getattr(obj, "__module__", None) or ""
        if obj is not None and where.startswith(PACKAGE + ".") and hasattr(obj, "__qualname__"):
            return f"{where}.{obj.__qualname__}"
    return None


def resolve_python_name(app, env, node, contnode):
    """``missing-reference``: a Python name in a docstring links to what that name is in its module.

    ``:func:`amata_lib.train``` (the front door) links to where ``train`` is defined, as
    ``from amata_lib import train`` finds it; ``Plan`` as a parameter's type in a module that
    imports it links to :class:`amata_lib.core.schedules.Plan`. A name the module does not
    have stays unresolved (and ``-n`` reports it).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    where = None
    if target.startswith(PACKAGE + "."):
        module, _, name = target.rpartition(".")
        where = defined_at(module, None, name)
    if where is None:
        where = defined_at(node.get("py:module"), node.get("py:class"), target)
    if where is None or where == target:
        return None
    node = node.deepcopy()
    node["reftarget"] = where
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], where, node,
                                             contnode)


def is_model(obj) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:
        return False
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def model_signature(app, what, name, obj, options, signature, return_annotation):
    """``autodoc-process-signature``: a pydantic model's signature is its field names (keyword-only), not
    pydantic's generated ``__init__`` with every validator in it."""
    if what != "class" or not is_model(obj):
        return None
    fields = [f if field.is_required() else f"{f}={field.default!r}" for f, field in obj.model_fields.items()]
    return f"(*, {', '.join(fields)})" if fields else "()", None


PYDANTIC_MEMBERS = ("model_config", "model_fields", "model_computed_fields")


def skip_pydantic_internals(app, what, name, obj, skip, options):
    """``autodoc-skip-member``: pydantic's own attributes of a model are not part of the API."""
    if name.startswith("__pydantic") or name in PYDANTIC_MEMBERS:
        return True
    return None


# --------------------------------------------------------------------------- launch buttons
def launch_buttons_need_a_url(app, config):
    """``config-inited``: without ``repository.url`` no launch provider stays on, so no button shows."""
    options = config.html_theme_options
    if options.get("repository_url"):
        return
    buttons = dict(options.get("launch_buttons") or {})
    for key in LAUNCH_PROVIDERS:
        if buttons.get(key):
            buttons[key] = ""
    buttons["thebe"] = False
    options["launch_buttons"] = buttons


def setup(app):
    for extension in ("sphinx.ext.autodoc", "sphinx.ext.viewcode"):  # their events are connected below
        app.setup_extension(extension)
    app.add_node(source_link)
    app.add_node(download_link)
    app.add_role("source", SourceRole())
    app.add_role("download-file", DownloadRole())
    app.add_directive("front-door", FrontDoor)
    app.add_post_transform(ResolveSiteLinks)
    app.connect("config-inited", launch_buttons_need_a_url, priority=100)
    app.connect("viewcode-find-source", find_source)
    app.connect("env-updated", render_every_module)
    app.connect("env-check-consistency", check_api_is_complete)
    app.connect("missing-reference", resolve_python_name)
    app.connect("autodoc-process-signature", model_signature)
    app.connect("autodoc-skip-member", skip_pydantic_internals, priority=100)  # before napoleon's handler
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
