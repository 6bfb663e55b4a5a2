"""A small lexical scanner for pgcloud's SQL sources (Python 3 standard library).

Splits a script into statements the way PostgreSQL's lexer would (quotes,
E'' strings, quoted identifiers, dollar quotes, nested block comments and
line comments are honoured; psql meta-commands at a statement start are
skipped), and gives each statement a comment-free, whitespace-collapsed form
for comparison. Used by scripts/generate.py (service pages) and
scripts/upgrade.py (upgrade scripts).
"""

import re

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _scan(text):
    """Yields (kind, chunk) pieces: 'code', 'string', 'ident', 'dollar',
    'comment', ';'."""
    i, n = 0, len(text)
    start = 0

    def flush(j):
        if j > start:
            return [("code", text[start:j])]
        return []

    out = []
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            out += flush(i)
            j = text.find("\n", i)
            j = n if j < 0 else j + 1
            out.append(("comment", text[i:j]))
            i = start = j
            continue
        if c == "/" and text.startswith("/*", i):
            out += flush(i)
            depth, j = 0, i
            while j < n:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            out.append(("comment", text[i:j]))
            i = start = j
            continue
        if c == "'":
            out += flush(i)
            esc = i > 0 and text[i - 1] in "eE" and (
                i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            if esc:  # the E belongs to the string
                out[-1] = ("code", out[-1][1][:-1]) if out and out[-1][0] == "code" else out[-1]
                b = i - 1
            else:
                b = i
            j = i + 1
            while j < n:
                if esc and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            out.append(("string", text[b:j + 1]))
            i = start = j + 1
            continue
        if c == '"':
            out += flush(i)
            j = text.find('"', i + 1)
            j = n - 1 if j < 0 else j
            out.append(("ident", text[i:j + 1]))
            i = start = j + 1
            continue
        if c == "$" and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = _DOLLAR.match(text, i)
            if m:
                out += flush(i)
                tag = m.group(0)
                j = text.find(tag, i + len(tag))
                j = n if j < 0 else j + len(tag)
                out.append(("dollar", text[i:j]))
                i = start = j
                continue
        if c == ";":
            out += flush(i)
            out.append((";", ";"))
            i = start = i + 1
            continue
        i += 1
    out += flush(n)
    # Merge adjacent code pieces.
    merged = []
    for k, s in out:
        if merged and k == "code" and merged[-1][0] == "code":
            merged[-1] = ("code", merged[-1][1] + s)
        else:
            merged.append((k, s))
    return merged


class Statement:
    """One statement: its text as written (leading comments included), the
    text without comments, and a normalised form (whitespace collapsed)."""

    def __init__(self, pieces):
        self.pieces = pieces
        self.text = "".join(s for _, s in pieces)
        # A comment separates tokens: it becomes a newline or a space.
        self.code = "".join(s if k != "comment" else ("\n" if "\n" in s else " ")
                            for k, s in pieces)
        # Leading psql meta-command lines (\echo ... \quit) are not SQL.
        body = self.code.lstrip()
        while body.startswith("\\"):
            nl = body.find("\n")
            body = "" if nl < 0 else body[nl + 1:].lstrip()
        self.body = body.rstrip()
        bp = _scan(self.body)
        self.norm = _collapse(bp)
        # Keyword view: strings, identifiers and bodies blanked out.
        self.shape = " ".join("".join(
            s if k == "code" else (" ; " if k == ";" else " ? ")
            for k, s in bp).split())
        self.comments = "".join(s for k, s in pieces if k == "comment")

    def words(self, n=6):
        return re.findall(r"[A-Za-z_][A-Za-z0-9_.]*|\(", self.shape)[:n]

    def __repr__(self):
        return "Statement(%r)" % self.norm[:60]


def _collapse(pieces):
    out = []
    for k, s in pieces:
        if k == "comment":
            out.append(" ")
        elif k == "code":
            out.append(" ".join(s.split()) if s.strip() else " ")
            if s[:1].isspace():
                out[-1] = " " + out[-1]
            if s[-1:].isspace():
                out[-1] = out[-1] + " "
        else:
            out.append(s)
    return "".join(out).strip()


def split(text):
    """The statements of a script (each ending with its ';' when it has one).
    Comments after the last statement are dropped; comment-only statements
    are not returned."""
    stmts, cur = [], []
    for piece in _scan(text):
        cur.append(piece)
        if piece[0] == ";":
            st = Statement(cur)
            if st.body.strip(" ;\n\t"):
                stmts.append(st)
            cur = []
    if cur:
        st = Statement(cur)
        if st.body.strip(" ;\n\t"):
            stmts.append(st)
    return stmts


def string_value(lit):
    """The value of a SQL string literal ('..' or E'..' or $$..$$)."""
    if lit.startswith("$"):
        tag = _DOLLAR.match(lit).group(0)
        return lit[len(tag):-len(tag)]
    if lit[:1] in "eE":
        body = lit[2:-1].replace("''", "'")
        return body.encode("utf-8").decode("unicode_escape") if "\\" in body else body
    return lit[1:-1].replace("''", "'")


def top_level_split(text, sep=","):
    """Splits text at top-level sep (outside parentheses, brackets, quotes)."""
    parts, depth, cur = [], 0, []
    for k, s in _scan(text):
        if k != "code":
            cur.append(s)
            continue
        for ch in s:
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            if ch == sep and depth == 0:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
    parts.append("".join(cur))
    return parts


def matching_paren(text, open_at):
    """Index of the ')' closing the '(' at open_at (quotes honoured)."""
    depth, pos = 0, 0
    for k, s in _scan(text):
        if k != "code":
            pos += len(s)
            continue
        for ch in s:
            if pos >= open_at:
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        return pos
            pos += 1
    return -1
