#!/usr/bin/env python3
"""Summarises `llvm-cov export` JSON files (one per instrumented binary) for some source
files: the UNION over the binaries of covered lines, functions and regions, each counted
once per distinct source location. Lines from a file's first top-level `#[cfg(test)]` to its
end (its unit-test module) are left out. Used by scripts/coverage-cuda.sh.

    coverage_summary.py SOURCE... -- EXPORT.json...
"""
import json
import re
import sys


def main():
    args = sys.argv[1:]
    sep = args.index("--")
    sources, exports = args[:sep], args[sep + 1:]
    text = {}
    test_from = {}
    for s in sources:
        lines = open(s).read().split("\n")
        text[s] = lines
        test_from[s] = next(
            (i + 1 for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines) + 1
        )
    # per source: line -> covered?, function key -> (covered, name), region key -> covered?
    lines = {s: {} for s in sources}
    funcs = {s: {} for s in sources}
    regions = {s: {} for s in sources}

    def which(fname):
        for s in sources:
            if fname.endswith("/" + s) or fname == s:
                return s
        return None

    for e in exports:
        data = json.load(open(e))["data"][0]
        for f in data["files"]:
            s = which(f["filename"])
            if s is None:
                continue
            # line coverage as llvm-cov's lcov export computes it: a line is instrumented
            # when a region starts on it or spans it, covered when its count is non-zero
            for ln, cnt in line_counts(f["segments"]).items():
                if ln < test_from[s]:
                    lines[s][ln] = lines[s].get(ln, False) or cnt > 0
        for fn in data["functions"]:
            code = [r for r in fn["regions"] if r[7] == 0]
            if not code:
                continue
            s = which(fn["filenames"][code[0][5]])
            if s is None or code[0][0] >= test_from[s]:
                continue
            key = (code[0][0], code[0][1])
            name = describe(text[s], code[0][0], fn["name"])
            prev = funcs[s].get(key, (False, name, None))
            funcs[s][key] = (prev[0] or fn["count"] > 0, name, code)
            for r in code:
                if which(fn["filenames"][r[5]]) != s:
                    continue
                rk = tuple(r[:4])
                regions[s][rk] = regions[s].get(rk, False) or r[4] > 0

    def pct(c, t):
        return f"{c}/{t} ({100.0 * c / t:.1f}%)" if t else "0/0"

    print(f"{'file':34} {'lines':>18} {'functions':>16} {'regions':>18}")
    tot = [0] * 6
    for s in sources:
        l, f, r = lines[s], funcs[s], regions[s]
        row = [sum(l.values()), len(l), sum(c for c, _, _ in f.values()), len(f),
               sum(r.values()), len(r)]
        tot = [a + b for a, b in zip(tot, row)]
        print(f"{s:34} {pct(row[0], row[1]):>18} {pct(row[2], row[3]):>16} "
              f"{pct(row[4], row[5]):>18}")
    print(f"{'total':34} {pct(tot[0], tot[1]):>18} {pct(tot[2], tot[3]):>16} "
          f"{pct(tot[4], tot[5]):>18}")
    print()
    print("uncovered functions (never entered):")
    for s in sources:
        for (ln, _), (c, name, code) in sorted(funcs[s].items()):
            if not c:
                end = max(r[2] for r in code)
                print(f"  {s}:{ln}-{end}  {name}")
    print()
    print("uncovered lines (line ranges, by enclosing function):")
    for s in sources:
        bad = sorted(ln for ln, c in lines[s].items() if not c)
        for a, b in ranges(bad):
            print(f"  {s}:{a}-{b}  in {describe(text[s], a, '')}")


def line_counts(segments):
    """Per-line counts from llvm-cov segments [line, col, count, has_count, is_region_entry,
    is_gap], following llvm's LineCoverageStats: a line is mapped when a region entry
    starts on it or a counted region spans it; its count is the max over those."""
    out = {}
    active = None  # the count of the segment in force at the start of the next line
    i = 0
    n = len(segments)
    if not n:
        return out
    line = segments[0][0]
    last = segments[-1][0]
    while line <= last:
        starts = []
        while i < n and segments[i][0] == line:
            starts.append(segments[i])
            i += 1
        wrapped = active
        mapped = False
        cnt = 0
        if wrapped is not None and wrapped[3] and not wrapped[5]:
            mapped = True
            cnt = wrapped[2]
        entries = [sg for sg in starts if sg[3] and sg[4] and not sg[5]]
        if entries:
            mapped = True
            cnt = max([cnt] + [sg[2] for sg in entries]) if wrapped is not None and wrapped[3] \
                and not wrapped[5] else max(sg[2] for sg in entries)
        if not mapped and starts and any(sg[3] and not sg[5] for sg in starts):
            mapped = True
            cnt = max(sg[2] for sg in starts if sg[3] and not sg[5])
        if starts:
            active = starts[-1]
        if mapped:
            out[line] = cnt
        line += 1
    return out


def ranges(nums):
    out = []
    for x in nums:
        if out and x == out[-1][1] + 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return out


def describe(lines, ln, mangled):
    """`fn name` (line) of the function around source line `ln`; closures say so."""
    name = "?"
    for i in range(ln - 1, -1, -1):
        m = re.search(r"\bfn (\w+)", lines[i])
        if m:
            name = f"fn {m.group(1)} (line {i + 1})"
            break
    if mangled.startswith("_RNC"):
        return f"closure at line {ln} in {name}"
    return name


if __name__ == "__main__":
    main()
