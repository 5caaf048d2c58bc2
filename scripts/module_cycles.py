#!/usr/bin/env python3
"""Module import cycles of a Rust crate.

Lists the `crate::…` / `super::…` paths each file of src/ names (in `use` lines and in
code), maps them to modules cut at DEPTH path segments (1: top-level modules such as
`device`, `tensor`; 2: also `device/cuda`, `nn/spec`, …), and prints the strongly
connected components of that graph, with the edges inside each.

    python3 scripts/module_cycles.py [SRC] [DEPTH] [-v] [--exclude PREFIX]...

-v lists every edge; --exclude drops the files under PREFIX (e.g. ops).
Comments are ignored; a path inside a `#[cfg(test)]` module counts like any other.
"""
import os, re, sys
args = [a for a in sys.argv[1:]]
excl = []
while "--exclude" in args:
    i = args.index("--exclude"); excl.append(args[i + 1]); del args[i:i + 2]
pos = [a for a in args if not a.startswith("-")]
root = pos[0] if pos else "src"
depth = int(pos[1]) if len(pos) > 1 else 1

def modname(path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] == "mod": rel = rel[:-1]
    if rel == ["lib"]: return None
    return rel

edges = {}
use_re = re.compile(r"\b(crate|super)((?:::\w+)+|::\{)")
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"): continue
        p = os.path.join(dp, f)
        if any(os.path.relpath(p, root).startswith(e) for e in excl): continue
        m = modname(p)
        if m is None: continue
        src = open(p).read()
        # drop comments
        src = re.sub(r"//[^\n]*", "", src)
        src = re.sub(r"(?s)/\*.*?\*/", "", src)
        # tests modules count too (they are compiled in cfg(test)) — skip #[cfg(test)] mod tests blocks? keep simple
        me = tuple(m[:depth])
        is_modrs = f == "mod.rs"
        for mt in re.finditer(r"\b(crate|super|self)::((?:\w+::)*\w+|\{[^}]*\})", src):
            kind, rest = mt.group(1), mt.group(2)
            # expand braces at the top level: crate::{a, b::c}
            if rest.startswith("{"):
                parts = [x.strip().split("::")[0] for x in rest[1:-1].split(",") if x.strip()]
                cands = [[x] for x in parts]
            else:
                cands = [rest.split("::")]
            for segs in cands:
                if kind == "crate":
                    tgt = segs
                elif kind == "super":
                    base = m[:-1]
                    s = segs
                    while s and s[0] == "super":
                        base = base[:-1]; s = s[1:]
                    tgt = base + s
                else:  # self
                    base = m[:] if is_modrs else m[:-1]
                    tgt = m + segs if is_modrs else m + segs
                    continue
                # keep only the segments that name modules (files/dirs)
                path_mod = []
                for seg in tgt:
                    cand = os.path.join(root, *path_mod, seg)
                    if os.path.isdir(cand) or os.path.isfile(cand + ".rs"):
                        path_mod.append(seg)
                    else:
                        break
                if not path_mod: continue
                t = tuple(path_mod[:depth])
                if t != me and not (t == me[:len(t)] or me == t[:len(me)]):
                    edges.setdefault(me, set()).add(t)
                elif t != me and depth > 1:
                    # parent/child edges inside one directory: record child→sibling only
                    if len(t) == len(me):
                        edges.setdefault(me, set()).add(t)

def name(t): return "/".join(t)
# Tarjan SCC
index = {}; low = {}; stack = []; on = set(); sccs = []; i = [0]
nodes = set(edges) | {x for v in edges.values() for x in v}
sys.setrecursionlimit(10000)
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in sorted(nodes):
    if v not in index: strong(v)
if "-v" in sys.argv:
    for a in sorted(edges):
        print(name(a), "->", ", ".join(sorted(map(name, edges[a]))))
if not sccs:
    print("no cycles")
for c in sccs:
    cs = set(c)
    print("cycle:", " ".join(sorted(map(name, c))))
    for a in sorted(c):
        for b in sorted(edges.get(a, ())):
            if b in cs: print("   ", name(a), "->", name(b))
