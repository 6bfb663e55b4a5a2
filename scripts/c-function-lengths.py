#!/usr/bin/env python3
"""The longest C functions of src/ and bgworkers/: lines from the line with the
function's name to its closing brace (pgindent layout: the name at column 0,
braces alone on their lines).

    scripts/c-function-lengths.py            the working tree, top 10
    scripts/c-function-lengths.py REV N      git revision REV, top N
"""
import re, subprocess, sys
rev = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
top = int(sys.argv[2]) if len(sys.argv) > 2 else 10
def files():
    if rev:
        out = subprocess.check_output(['git', 'ls-tree', '-r', '--name-only', rev, 'src', 'bgworkers'], text=True)
    else:
        out = subprocess.check_output(['git', 'ls-files', 'src', 'bgworkers'], text=True)
    return [f for f in out.split() if f.endswith('.c')]
def text(f):
    return subprocess.check_output(['git', 'show', f'{rev}:{f}'], text=True) if rev else open(f).read()
res = []
for f in files():
    L = text(f).split('\n')
    i = 0
    while i < len(L):
        if L[i] == '{' and i > 0 and L[i - 1].rstrip().endswith(')'):
            # the name: nearest previous line at column 0 containing '('
            j = i - 1
            while j > 0 and not re.match(r'^[A-Za-z_][\w\s\*]*\(', L[j]):
                j -= 1
            m = re.match(r'^([A-Za-z_]\w*)\s*\(', L[j])
            k = i + 1
            while k < len(L) and L[k] != '}':
                k += 1
            if m:
                res.append((k - j + 1, f, m.group(1)))
            i = k
        i += 1
res.sort(reverse=True)
for n, f, name in res[:top]:
    print(f'{n:5d}  {f}:{name}')
