"""The house's layout, read from the source with ``ast`` (nothing is imported).

* Imports go one way, with no cycles (docs/architecture.md): every import of
  one project module by another, at module level or inside a function,
  counts. :data:`LAYERS` is the order of docs/architecture.md; a module
  imports only from its own layer or the layers before it.
* Each package's docstring (the library's and ``gpu_setup``'s) is its map: one
  line per module it holds, naming every module and nothing else.
"""
import ast
import os
import re

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, "srcnn_theano")

#: docs/architecture.md's order, bottom first: a module may import from its own
#: layer and the layers before it.
LAYERS = [
    ["errors", "files", "allocator", "cores"],
    ["image"],
    ["patches"],
    ["blas", "gpu"],
    ["backend"],
    ["network"],
    ["evaluation"],
    ["training"],
    ["apps"],
    ["commandline", "cli", "__main__"],
]


def package_modules(root=PACKAGE, name="srcnn_theano"):
    """``{dotted module name: path}`` of every ``.py`` file under ``root``."""
    modules = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.exists(os.path.join(folder, d, "__init__.py")))
        rel = os.path.relpath(folder, root)
        prefix = name if rel == "." else name + "." + rel.replace(os.sep, ".")
        for f in sorted(files):
            if f.endswith(".py"):
                modules[prefix if f == "__init__.py" else prefix + "." + f[:-3]] = \
                    os.path.join(folder, f)
    return modules


def imported_modules(path, module, known):
    """The project modules ``module`` (its source at ``path``) imports, anywhere in it."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [base + "." + a.name for a in node.names]
        else:
            continue
        for name in names:
            # "import a.b.c" names a.b.c and runs a and a.b: the deepest known one counts
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph():
    known = package_modules()
    return {m: imported_modules(p, m, known) for m, p in known.items()}


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_of(module):
    top = module.split(".")[1] if "." in module else ""
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_import_walk_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from srcnn_theano.backend import theano\n"
                   "    from . import files\n")
    known = {"srcnn_theano.backend": "", "srcnn_theano.files": "", "srcnn_theano.blas": ""}
    assert imported_modules(str(src), "srcnn_theano.blas", known) == {
        "srcnn_theano.backend", "srcnn_theano.files"}


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_go_one_way():
    """No module imports from a layer above its own (docs/architecture.md's order)."""
    graph = import_graph()
    unplaced = [m for m in graph if m != "srcnn_theano" and layer_of(m) is None]
    assert not unplaced, f"modules in no layer of LAYERS (and docs/architecture.md): {unplaced}"
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m != "srcnn_theano"
                    for t in targets if t != "srcnn_theano" and layer_of(t) > layer_of(m))
    assert not upward, "imports from a higher layer: " + ", ".join(upward)


# --------------------------------------------------------------------------
# Package maps
# --------------------------------------------------------------------------

def all_modules():
    """The library's modules and those of ``gpu_setup/`` (the GPU tooling, also a package)."""
    return {**package_modules(), **package_modules(os.path.join(REPO, "gpu_setup"), "gpu_setup")}


def packages():
    return sorted(m for m, p in all_modules().items() if p.endswith("__init__.py"))


def children(package):
    """The modules and subpackages directly inside ``package``."""
    root = os.path.dirname(all_modules()[package])
    names = {f[:-3] for f in os.listdir(root) if f.endswith(".py") and f != "__init__.py"}
    names |= {d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "__init__.py"))}
    return names


def named_in_map(docstring):
    """The names a package docstring's map gives: the first word of each entry of the
    block after its ``Modules::`` line (``name`` or ``name/``); a line indented deeper
    continues an entry."""
    marker = re.search(r"^Modules::$", docstring, re.M)
    block = docstring[marker.end():] if marker else ""
    names, indent = set(), None
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # the end of the indented block
        indent = depth if indent is None else indent
        m = re.match(r"(\w+)/?(\s|$)", line.lstrip())
        if depth == indent and m:
            names.add(m.group(1))
    return names


@pytest.mark.parametrize("package", packages())
def test_package_docstring_maps_exactly_its_modules(package):
    path = all_modules()[package]
    doc = ast.get_docstring(ast.parse(open(path).read())) or ""
    named, present = named_in_map(doc), children(package)
    assert named, f"{package}: no map (a 'Modules::' block, one line a module) in its docstring"
    assert not named - present, f"{package}'s map names what it does not hold: {named - present}"
    assert not present - named, f"{package}'s map leaves out {present - named}"


def test_map_reader():
    doc = ("Title.\n\nModules::\n\n    io        reading\n              more of io\n"
           "    png/      x\n\nAfter::\n\n    not_a_module\n")
    assert named_in_map(doc) == {"io", "png"}
    assert named_in_map("No map::\n\n    io  reading\n") == set()
