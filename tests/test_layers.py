"""The house plan, checked: imports flow one way through the layers, nothing below the
asyncio edge imports asyncio, and no two modules import each other (directly or round a
cycle).  Imports under `if TYPE_CHECKING:` are annotations only and do not count; imports
inside functions do (they run).

    rank  layer                              may import (besides the standard library)
    0     tcpstack.errors                    -
    1     tcpstack.wire                      0
    2     tcpstack.tcp (the TCB)             0-1
    3     tcpstack.host (StackCore, ...)     0-2
    4     tcpcrypt (sans-IO), tcpstack.sim,  0-4 (tcpcrypt's modules among themselves)
          tcpstack.impairment (the model the
          simulator, tun.impaired and the test
          harness share), tcpstack.sansio
    5     tcpstack.aio (the asyncio edge)    0-5
    6     tun (links: TUN, memory, impaired) 0-6
    7     tcpcrypt.asyncio, tcpcrypt.switch, 0-7
          the package APIs
    8     tcpstack.tools, tcpstack.__main__  0-8
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("tcpstack", "tcpcrypt", "tun")
EDGE_RANK = 5          # asyncio is allowed from here up


def rank(module: str) -> int:
    if module in ("tcpstack.errors", "tcpstack._lazy"):
        return 0
    for prefix, r in (("tcpstack.wire", 1), ("tcpstack.tcp", 2), ("tcpstack.host", 3),
                      ("tcpstack.sim", 4), ("tcpstack.impairment", 4), ("tcpstack.sansio", 4), ("tcpstack.aio", 5), ("tcpstack.tools", 8),
                      ("tcpstack.__main__", 8), ("tcpcrypt.asyncio", 7), ("tcpcrypt.switch", 7),
                      ("tun", 6)):
        if module == prefix or module.startswith(prefix + "."):
            return r
    if module in ("tcpstack", "tcpcrypt"):     # the package __init__s: the public API
        return 7
    if module.startswith("tcpcrypt."):
        return 4
    raise AssertionError(f"module {module} has no layer: add it to tests/test_layers.py")


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and
            ((isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or
             (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")))


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules `name` imports at run time."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                for sub in child.orelse:           # the else: branch does run
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    out.add(a.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                subs = {f"{mod}.{a.name}" for a in child.names if f"{mod}.{a.name}" in known}
                out.update(subs)                    # `from pkg import module`
                if len(subs) < len(child.names):    # ... and names from the module itself
                    out.add(mod)
            visit(child)

    visit(tree)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    g = {}
    for name, path in mods.items():
        deps = set()
        for imp in imports_of(name, path, known):
            if imp.split(".")[0] in PACKAGES:
                # the deepest project module the import names
                parts = imp.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    deps.add(".".join(parts))
            elif imp == "asyncio" or imp.startswith("asyncio."):
                deps.add("asyncio")
        g[name] = deps
    return g


def test_every_module_has_a_layer():
    for name in modules():
        rank(name)


def test_imports_flow_one_way():
    bad = []
    for name, deps in graph().items():
        for d in deps:
            if d == "asyncio":
                continue
            if rank(d) > rank(name):
                bad.append(f"{name} (layer {rank(name)}) imports {d} (layer {rank(d)})")
    assert not bad, "upward imports:\n  " + "\n  ".join(sorted(bad))


def test_nothing_below_the_edge_imports_asyncio():
    bad = [n for n, deps in graph().items() if "asyncio" in deps and rank(n) < EDGE_RANK]
    assert not bad, f"asyncio imported below the edge: {sorted(bad)}"


def test_no_import_cycles():
    g = {n: {d for d in deps if d != "asyncio"} for n, deps in graph().items()}
    # package __init__s are imported with every submodule; an edge into one is the
    # package's API and does not make a cycle with its own submodules
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                dfs(d)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            dfs(n)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_what_it_must():
    """The checker itself: an upward import, asyncio below the edge and a cycle are found."""
    assert rank("tcpstack.wire.ip") < rank("tcpstack.tcp.connection") < rank("tcpstack.host.stack")
    known = {"tcpstack.wire.ip", "tcpstack.host.stack", "tcpstack.host"}
    src = ROOT / "tests" / "_layers_probe.py"
    try:
        src.write_text("import asyncio\nfrom tcpstack.host import stack\n"
                       "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tcpstack.tools\n"
                       "def f():\n    from ..host.stack import StackCore\n")
        got = imports_of("tcpstack.wire.ip", src, known)
    finally:
        src.unlink()
    assert "asyncio" in got and "tcpstack.host.stack" in got
    assert "tcpstack.tools" not in got
