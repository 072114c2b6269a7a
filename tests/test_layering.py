"""The house has one-way layers (docs/ARCHITECTURE.md): a module imports only from its own layer or below.

Every ``import`` / ``from ... import`` in the library, the pages, the app and the benchmarks is read
with ``ast`` (module level and inside functions alike) and checked against the layer table below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# layer -> module prefixes (a prefix matches the module itself and everything under it)
LAYERS: dict[int, tuple[str, ...]] = {
    1: ("ssl_viz.config", "ssl_viz.fileio", "ssl_viz.paths", "ssl_viz.device", "ssl_viz.rundir"),
    2: ("ssl_viz.data", "ssl_viz.augment", "ssl_viz.encoders", "ssl_viz.losses", "ssl_viz.evaluate", "ssl_viz.cache",
        "ssl_viz.safety"),
    3: ("ssl_viz.methods", "ssl_viz.checkpoint"),
    4: ("ssl_viz.train", "ssl_viz.analysis"),
    5: ("ssl_viz.jobs", "ssl_viz.sweeps"),
    6: ("ssl_viz.cli", "ssl_viz.zoo", "ssl_viz.ui", "ssl_viz.__main__", "pages", "bench", "app"),
}
# imports that the layer numbers allow but the contracts forbid: (importer prefix, imported prefix, why)
FORBIDDEN = (
    ("ssl_viz.analysis", "ssl_viz.train", "analysis is read-only: it never trains"),
    ("ssl_viz.train", "ssl_viz.analysis", "the trainer does not depend on the views of its results"),
)
PACKAGE_ROOT = "ssl_viz"  # ssl_viz/__init__.py holds only the version


def layer_of(module: str) -> int | None:
    if module == PACKAGE_ROOT:
        return 1
    best, best_len = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> list[Path]:
    files = sorted((ROOT / "ssl_viz").rglob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    return files + [ROOT / "app.py"]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved, ``from X import Y``
    reported as ``X.Y`` when ``X.Y`` is a module of the project (so a package's submodule counts, not the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here if is_pkg else here[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return [(line, mod) for line, mod in found if mod == PACKAGE_ROOT or mod.startswith(PACKAGE_ROOT + ".")
            or mod.split(".")[0] in ("pages", "bench", "app")]


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(files: list[Path] | None = None) -> list[str]:
    out = []
    for path in files or project_files():
        importer = module_name(path)
        own = layer_of(importer)
        if own is None:
            out.append(f"{importer}: module has no layer in tests/test_layering.py (and docs/ARCHITECTURE.md)")
            continue
        for line, imported in sorted(set(imports_of(path))):
            if imported == PACKAGE_ROOT:
                continue
            theirs = layer_of(imported)
            rel = path.relative_to(ROOT)
            if theirs is None:
                out.append(f"{rel}:{line}: imports {imported}, which has no layer")
            elif theirs > own:
                out.append(f"{rel}:{line}: {importer} (layer {own}) imports {imported} (layer {theirs})")
            for src, dst, why in FORBIDDEN:
                if (importer == src or importer.startswith(src + ".")) and (imported == dst or imported.startswith(dst + ".")):
                    out.append(f"{rel}:{line}: {importer} imports {imported}: {why}")
    return out


def test_every_import_goes_down_or_sideways():
    assert violations() == []


def test_no_streamlit_outside_ui_and_pages():
    bad = []
    for path in (ROOT / "ssl_viz").rglob("*.py"):
        if "ui" in path.relative_to(ROOT / "ssl_viz").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "streamlit"]
    assert bad == []


def test_no_import_cycles_between_library_modules():
    """Even inside one layer, no two library modules reach each other (a function-level import counts)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "ssl_viz").rglob("*.py"):
        me = module_name(path)
        graph[me] = {m for _, m in imports_of(path) if m != me and m != PACKAGE_ROOT and not me.startswith(m + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt in graph and not state.get(nxt):
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("importer, imported", [("ssl_viz/evaluate.py", "ssl_viz.train"), ("ssl_viz/analysis/extra.py", "ssl_viz.jobs"),
                                                ("ssl_viz/config.py", "ssl_viz.data"), ("ssl_viz/analysis/extra.py", "ssl_viz.train")])
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, importer, imported):
    """A forbidden import written into a copy of a module, at module level or inside a function, is reported."""
    for body in (f"import {imported}\n", f"def f():\n    from {imported} import something\n"):
        fake = ROOT / importer
        original = fake.read_text(encoding="utf-8") if fake.exists() else ""
        copy = tmp_path / "copy.py"
        copy.write_text(original + "\n" + body, encoding="utf-8")
        monkeypatch.setattr(Path, "read_text", _reader(fake, copy))
        try:
            found = violations([fake])
        finally:
            monkeypatch.undo()
        assert any(imported in v for v in found), (body, found)


def _reader(fake: Path, copy: Path):
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        return real(copy if self == fake else self, *args, **kwargs)

    return read_text
