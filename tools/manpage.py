#!/usr/bin/env python3
"""manpage.py — assembles a man page's scdoc source from the files that already say it.

A man page written beside the docs would drift from them, so each page is a short template
(docs/man/*.scd.in) whose placeholder lines are filled from the one source of their content:

    @NAME@ on a line of its own, given --insert NAME=KIND:FILE, becomes FILE rendered as KIND:
      scdoc     FILE is scdoc already (the command list tools/hotpatch_commands.c prints from
                the agent's dispatch table)
      markdown  the subset of Markdown docs/*.md use: headings, paragraphs, lists one level
                deep, tables, fenced code, `code`, **bold**, *emphasis*
      c-header  the doc comments of a public C header: each comment with the declarations
                under it (HOTPATCH_API functions, typedefs, enums, structs, macros)
      cxx-header  the same for the inline functions of namespace hotpatch in hotpatch.hpp
      c-intro   only the comment at the top of a header (what it is for)
    @VERSION@ anywhere becomes --version.

    manpage.py TEMPLATE OUTPUT --version 0.2.0 --insert COMMANDS=scdoc:build/man/commands.scd
               [--scdoc scdoc]     OUTPUT is then the roff page scdoc renders, not the source

Standard library only; it runs at build time with the Python the build found. Text that scdoc
would misread (a paragraph starting with a roff control character) is an error naming the line,
not a silently broken page.
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path


class SourceError(Exception):
    pass


# ---- inline markup -------------------------------------------------------------------------

def escape(text):
    """Plain text for scdoc: its markup characters taken literally."""
    return re.sub(r"([\\*_])", r"\\\1", text)


def inline(text):
    """Markdown inline markup to scdoc: `code` and **bold** bold, *emphasis* underlined."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise SourceError(f"unclosed ` in: {text}")
            out.append("*" + escape(text[i + 1:end]) + "*")
            i = end + 1
        elif text.startswith("**", i):
            end = text.find("**", i + 2)
            if end < 0:
                raise SourceError(f"unclosed ** in: {text}")
            out.append("*" + escape(text[i + 2:end].replace("`", "")) + "*")
            i = end + 2
        elif text[i] == "*" and i + 1 < len(text) and text[i + 1] != " " and "*" in text[i + 1:]:
            end = text.find("*", i + 1)
            out.append("_" + escape(text[i + 1:end]) + "_")
            i = end + 1
        else:
            out.append(escape(text[i]))
            i += 1
    return "".join(out)


def paragraph(lines):
    """Lines of one paragraph as one scdoc line (roff fills it anyway)."""
    text = " ".join(line.strip() for line in lines)
    if text[:1] in (".", "'", "[", "|", "]"):
        raise SourceError(f"a paragraph may not start with {text[0]!r} (roff would read a "
                          f"request, scdoc a table): {text[:60]}")
    return text


def literal(lines):
    """A fenced block: scdoc keeps it verbatim, except that a backslash must be doubled."""
    return ["```", *[line.replace("\\", "\\\\") for line in lines], "```"]


# ---- Markdown ------------------------------------------------------------------------------

def table(rows):
    """Markdown table rows (header, separator, body) as a list of terms: the first cell is the
    term, the others follow indented, one per line, labelled with their column's header. A
    roff table would give each column a fixed share of an 80-column terminal, too narrow for
    names such as HOTPATCH_GFLAGS_ADAPTER (troff: can't break line)."""
    cells = [split_row(r) for r in rows if not re.match(r"^\|[\s:|-]+\|?\s*$", r)]
    head, body = cells[0], cells[1:]
    out = []
    for row in body:
        out.append(inline(row[0]))
        rest = [(h, c) for h, c in zip(head[1:], row[1:]) if c]
        for n, (label, cell) in enumerate(rest):
            shown = inline(cell) if len(head) == 2 else f"_{escape(label)}_: {inline(cell)}"
            # scdoc continues the indented block after a "++" line break without a tab.
            out.append(("\t" if n == 0 else "") + shown + (" ++" if n + 1 < len(rest) else ""))
        out.append("")
    return out[:-1]


def split_row(row):
    """The cells of `| a | b |`; a bar inside `code` does not split."""
    cells, cur, in_code = [], "", False
    for ch in row.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    cells.append(cur.strip())
    return cells


def list_items(lines):
    """A Markdown list (items at column 0, sub-items at column 2) to scdoc list lines."""
    out, item, depth = [], None, 0

    def flush():
        if item is not None:
            out.append(("\t" * depth) + "- " + inline(paragraph(item)))

    for line in lines:
        m = re.match(r"^( *)- (.*)$", line)
        if m and len(m.group(1)) in (0, 2):
            flush()
            depth, item = len(m.group(1)) // 2, [m.group(2)]
        else:
            item.append(line)
    flush()
    return out


def blocks(lines):
    """Splits Markdown into (kind, lines): heading, code, table, list, paragraph."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise SourceError(f"unclosed code block at line {i + 1}")
            yield "code", lines[i + 1:end]
            i = end + 1
        elif line.startswith("#"):
            yield "heading", [line]
            i += 1
        else:
            kind = "table" if line.startswith("|") else "list" if line.startswith("- ") else "text"
            j = i
            while j < len(lines) and lines[j].strip() and not lines[j].startswith(("#", "```")):
                if kind == "text" and lines[j].startswith(("|", "- ")):
                    break
                if kind == "table" and not lines[j].startswith("|"):
                    break
                j += 1
            yield kind, lines[i:j]
            i = j


def markdown(text):
    """A Markdown document as scdoc: its title is dropped (the page has its NAME), ## headings
    become sections, ### subsections; the text before the first ## goes under DESCRIPTION."""
    out = ["# DESCRIPTION", ""]
    for kind, lines in blocks(text.splitlines()):
        if kind == "heading":
            level, title = re.match(r"^(#+)\s+(.*)$", lines[0]).groups()
            if len(level) == 1:
                continue
            out.append(("# " + title.upper()) if len(level) == 2 else ("## " + title))
        elif kind == "code":
            out.extend(literal(lines))
        elif kind == "table":
            out.extend(table(lines))
        elif kind == "list":
            out.extend(list_items(lines))
        else:
            out.append(inline(paragraph(lines)))
        out.append("")
    return out


# ---- C and C++ headers ---------------------------------------------------------------------

# A doc comment starts a line; comments after code on a line (enum members) belong to that code.
COMMENT = re.compile(r"^/\*(.*?)\*/", re.S | re.M)


def comment_lines(body):
    """The text of a /* ... */ comment without its leading stars."""
    lines = [re.sub(r"^\s?\* ?", "", line) for line in body.splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def comment_text(lines):
    """A doc comment as scdoc: paragraphs, "- " lists, and indented lines as code."""
    out, para, code, items = [], [], [], []

    def flush():
        if para:
            out.extend([inline_plain(paragraph(para)), ""])
            para.clear()
        if items:
            out.extend(["- " + inline_plain(paragraph(i)) for i in items] + [""])
            items.clear()
        if code:
            out.extend(literal(code) + [""])
            code.clear()

    for line in lines:
        if not line.strip():
            flush()
        elif re.match(r"^\s*- ", line):
            if para or code:
                flush()
            items.append([line.strip()[2:]])
        elif items and line.startswith("  "):
            items[-1].append(line)
        elif line.startswith("  "):
            if para or items:
                flush()
            code.append(line[2:])
        else:
            if code or items:
                flush()
            para.append(line)
    flush()
    return out


def inline_plain(text):
    """Comment prose: `code` is bold; nothing else is markup (hotpatch_* is a name)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:
        return escape(text)
    return "".join(escape(part) if n % 2 == 0 else "*" + escape(part) + "*"
                   for n, part in enumerate(parts))


def c_declarations(code):
    """The public declarations in a stretch of C between two comments, as shown to readers."""
    shown, names = [], []
    text = re.sub(r"^\s*#\s*(if|ifdef|ifndef|else|elif|endif|include)\b.*$", "", code, flags=re.M)
    text = re.sub(r'extern "C" \{|\}\s*/\* extern "C" \*/', "", text)
    for m in re.finditer(r"^#define\s+(\w+)(\([^)]*\))?(.*?)(?<!\\)$", text, re.M | re.S):
        name, args, rest = m.groups()
        shown.append(f"#define {name}{args}" if args else f"#define {name}{rest.rstrip()}")
        names.append(name + ("()" if args else ""))
    text = re.sub(r"^#define.*?(?<!\\)$", "", text, flags=re.M | re.S)
    for m in re.finditer(r"[^;{}]*?(\{[^}]*\})?[^;{}]*;", text, re.S):
        decl = m.group(0).strip()
        if not decl:
            continue
        decl = re.sub(r"\bHOTPATCH_API\s+", "", decl)
        if "{" not in decl:
            decl = re.sub(r"\s+", " ", decl).replace("( ", "(")
        shown.append(decl)
        names.append(declared_name(decl))
    return shown, names


def declared_name(decl):
    m = re.match(r"^(enum|struct)\s+(\w+)", decl)
    if m:
        return f"{m.group(1)} {m.group(2)}"
    m = re.search(r"\(\s*\*\s*(\w+)\)\s*\(", decl) or re.search(r"(\w+)\s*\(", decl)
    return m.group(1) + ("" if decl.startswith("typedef") else "()") if m else decl.split()[-1]


def cxx_declarations(code):
    """inline functions of namespace hotpatch (not detail::), shown up to their body."""
    shown, names = [], []
    for m in re.finditer(r"^((?:template <[^>]*> )?inline [^{;]*?)\s*\{", code, re.M):
        sig = re.sub(r"\s+", " ", m.group(1)).strip()
        shown.append(sig + ";")
        names.append("hotpatch::" + re.search(r"(\w+)\s*\(", sig).group(1) + "()")
    return shown, names


def header(text, cxx=False):
    """Every doc comment of a header that has declarations under it (the first comment, which
    says what the header is, is c-intro's)."""
    if cxx:
        text = re.sub(r"namespace detail \{.*?\} // namespace detail", "", text, flags=re.S)
    pieces = list(COMMENT.finditer(text))
    out = []
    for n, m in enumerate(pieces[1:], start=1):
        end = pieces[n + 1].start() if n + 1 < len(pieces) else len(text)
        code = text[m.end():end]
        shown, names = (cxx_declarations if cxx else c_declarations)(code)
        if not shown:
            continue
        out.extend(["## " + escape(", ".join(dict.fromkeys(names))), ""])
        out.extend(literal(shown) + [""])
        out.extend(comment_text(comment_lines(m.group(1))))
    return out


def intro(text):
    first = COMMENT.search(text)
    lines = comment_lines(first.group(1))
    if lines and " — " in lines[0]:
        lines[0] = lines[0].split(" — ", 1)[1]
        lines[0] = lines[0][:1].upper() + lines[0][1:]
    return comment_text(lines)


# ---- the page ------------------------------------------------------------------------------

RENDER = {
    "scdoc": lambda text: text.rstrip("\n").splitlines(),
    "markdown": markdown,
    "c-header": header,
    "cxx-header": lambda text: header(text, cxx=True),
    "c-intro": intro,
}


def render_insert(spec):
    key, _, source = spec.partition("=")
    kind, _, path = source.partition(":")
    if kind not in RENDER or not path:
        raise SourceError(f"--insert {spec}: expected NAME=KIND:FILE, KIND one of {sorted(RENDER)}")
    try:
        return key, RENDER[kind](Path(path).read_text(encoding="utf-8"))
    except SourceError as e:
        raise SourceError(f"{path}: {e}") from None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("template")
    p.add_argument("output")
    p.add_argument("--version", required=True)
    p.add_argument("--insert", action="append", default=[])
    p.add_argument("--scdoc", help="render with this scdoc program")
    args = p.parse_args(argv)
    try:
        inserts = dict(render_insert(s) for s in args.insert)
    except SourceError as e:
        print(f"manpage.py: {e}", file=sys.stderr)
        return 1
    out = []
    for line in Path(args.template).read_text(encoding="utf-8").splitlines():
        key = line.strip().strip("@")
        if line.strip() == f"@{key}@" and key in inserts:
            out.extend(inserts.pop(key))
        else:
            out.append(line.replace("@VERSION@", args.version))
    if inserts:
        print(f"manpage.py: {args.template} has no line @{next(iter(inserts))}@", file=sys.stderr)
        return 1
    source = "\n".join(out).rstrip("\n") + "\n"
    if args.scdoc:
        r = subprocess.run([args.scdoc], input=source.encode(), capture_output=True)
        if r.returncode != 0:
            print(f"manpage.py: scdoc refused {args.template}: {r.stderr.decode().strip()}",
                  file=sys.stderr)
            return 1
        Path(args.output).write_bytes(r.stdout)
    else:
        Path(args.output).write_text(source, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
