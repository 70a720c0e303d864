"""Print selfsup's package-level import graph: edges between top-level subpackages, and the cycles among them.

usage: python scripts/import_graph.py [SRC_DIR]   (default: src). Counts every import, including those inside
functions, which is what import-linter checks too.
"""

import sys
from collections import defaultdict

import grimp

src = sys.argv[1] if len(sys.argv) > 1 else "src"
sys.path.insert(0, src)
graph = grimp.build_graph("selfsup", include_external_packages=False)


def package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


edges = defaultdict(int)
for importer in graph.modules:
    for imported in graph.find_modules_directly_imported_by(importer):
        a, b = package(importer), package(imported)
        if a != b:
            edges[(a, b)] += 1
for (a, b), n in sorted(edges.items()):
    print(f"{a} -> {b} ({n})")
packages = sorted({p for e in edges for p in e})
cycles = [(a, b) for (a, b) in edges if (b, a) in edges and a < b]
print("package cycles:", ", ".join(f"{a} <-> {b}" for a, b in cycles) or "none")
module_cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                 if a < b and a in graph.find_modules_directly_imported_by(b)]
print("module cycles:", ", ".join(f"{a} <-> {b}" for a, b in module_cycles) or "none")
