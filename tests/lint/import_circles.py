#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a circle (README: "Layout of the
repository"). Reads `crate::` paths outside `#[cfg(test)]` code and comments; a module is a
top-level file or folder of the crate's `src/`. Prints each circle with the files that close it.

usage: tests/lint/import_circles.py [CRATE_SRC ...]   (default: worker/src operator/src)
"""
import os
import re
import sys


def module_imports(src):
    """{module: {imported module: {files}}} for the top-level modules of one crate."""
    imports = {}
    for folder, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, src)
            module = rel.split(os.sep)[0].removesuffix(".rs")
            if module in ("main", "lib"):
                continue
            text = open(path, encoding="utf-8").read()
            test_start = text.find("#[cfg(test)]")
            if test_start >= 0:
                text = text[:test_start]
            text = re.sub(r"//.*", "", text)
            used = set(re.findall(r"crate::(\w+)", text))
            for group in re.findall(r"use crate::\{([^}]*)\}", text, re.S):
                used.update(p.strip().split("::")[0] for p in group.split(",") if p.strip())
            edges = imports.setdefault(module, {})
            for other in used - {module}:
                edges.setdefault(other, set()).add(rel)
    return imports


def circles(imports):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in imports.get(v, {}):
            if w not in imports:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(imports):
        if v not in index:
            visit(v)
    return found


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    crates = sys.argv[1:] or [os.path.join(root, "worker/src"), os.path.join(root, "operator/src")]
    failed = False
    for src in crates:
        imports = module_imports(src)
        for circle in circles(imports):
            failed = True
            print(f"{src}: modules import each other in a circle: {', '.join(circle)}")
            for a in circle:
                for b, files in sorted(imports[a].items()):
                    if b in circle:
                        print(f"  {a} -> {b}: {', '.join(sorted(files))}")
    if failed:
        print("Move what both sides need into a module of its own, or into the lower one.")
        return 1
    print(f"no import circles in {', '.join(os.path.relpath(c, root) for c in crates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
