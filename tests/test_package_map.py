"""The package's map holds: layers import downwards only, no import cycle, published names across modules.

Layers, bottom up: ``infra`` (data, files, checks), ``core`` (Algorithm 1: attacks, schedules,
maximizers, one epoch, the trainer, evaluation, models), ``methods`` (the accelerated methods),
``study`` (the research tools), then the top (``spec``, ``experiments``, ``estimate``, ``cli``)
and ``book`` (the chapters' widgets and figures). Every import counts, at the top of a module
or inside a function, so a late import cannot hide a cycle.
"""
import ast
from pathlib import Path

import pytest

import amata_lib

PACKAGE = Path(amata_lib.__file__).parent
# what each layer may import from the package (besides itself)
ALLOWED = {
    "infra": {"infra"},
    "core": {"infra", "core"},
    "methods": {"infra", "core", "methods"},
    "study": {"infra", "core", "methods", "study"},
    "book": {"infra", "core", "methods", "study", "book", "spec"},
    "top": {"infra", "core", "methods", "study", "book", "top"},
}


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "top"


def _is_module(dotted: str) -> bool:
    where = PACKAGE.parent / dotted.replace(".", "/")
    return where.with_suffix(".py").exists() or where.is_dir()


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``(module imported, names, line)`` of ``path`` inside the package, relative imports resolved."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "amata_lib":
                continue
            names = [a.name for a in node.names]
            # "from . import distributed" imports a module
            subs = [f"{target}.{n}" for n in names if _is_module(f"{target}.{n}")]
            out += [(s, [], node.lineno) for s in subs]
            if len(subs) < len(names):
                out.append((target, [n for n in names if f"{target}.{n}" not in subs], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "amata_lib"]
    return out


FILES = sorted(PACKAGE.rglob("*.py"))


def test_the_subpackages_exist_and_hold_algorithm_1():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == \
        {"core", "methods", "study", "infra", "book"}
    core = {p.stem for p in (PACKAGE / "core").glob("*.py")}
    assert {"attacks", "schedules", "maximizers", "epoch", "training"} <= core
    assert {p.stem for p in (PACKAGE / "methods").glob("*.py")} == {"__init__", "free", "fast", "yopo", "atta",
                                                                     "nfgsm"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_import_downwards_only(path):
    module = _module(path)
    layer = _layer(module)
    for target, _, line in _imports(path):
        other = _layer(target) if target != "amata_lib" else "top"
        if target == "amata_lib.spec":
            other = "spec" if layer == "book" else "top"
        assert other in ALLOWED[layer], f"{module}:{line} ({layer}) imports {target} ({other})"


def test_no_module_imports_a_private_name_of_another():
    for path in FILES:
        for target, names, line in _imports(path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{_module(path)}:{line} imports {private} from {target}"


def test_there_is_no_import_cycle():
    graph = {}
    for path in FILES:
        graph.setdefault(_module(path), set()).update(t for t, _, _ in _imports(path))
    for deps in graph.values():  # importing a.b.c also runs the package a.b's __init__, an edge of its own
        deps.discard("amata_lib")
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_the_front_door_is_small_and_eager():
    assert len(amata_lib.__all__) <= 20
    for name in amata_lib.__all__:
        assert name in vars(amata_lib), name  # imported, not looked up lazily
    assert {"Amata", "Constant", "pgd", "train", "run", "load", "DigitsCNN"} <= set(amata_lib.__all__)


def test_the_contributing_guide_s_maximizer_works():
    """The example of CONTRIBUTING.md's 'Adding a maximizer' runs as written and trains."""
    import re

    import torch

    from amata_lib import Constant, DigitsCNN, Plan, TrainOptions, load, train

    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class NoisyFGSM" in b)
    code = code.replace("from ..", "from amata_lib.")
    scope: dict = {}
    exec(compile(code, "CONTRIBUTING.md", "exec"), scope)
    maximizer = scope["NoisyFGSM"](0.2)
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    x_adv = maximizer(DigitsCNN().eval(), x, y, Plan(1, 0.25))
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and maximizer.passes(Plan(1, 0.25)) == 1
    train_set, test_set = load("digits")
    history = train(DigitsCNN(), train_set, test_set, schedule=Constant(1, 0.25, 1), maximizer=maximizer,
                    options=TrainOptions(eval_subset=20))
    assert history[-1]["passes"] == 2 * 11
