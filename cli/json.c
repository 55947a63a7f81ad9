/*
 * json.c — a small validating reader for the top-level members of one JSON object, and the
 * string writer for the lines the client makes itself (ps --json, an unreached target).
 * See json.h. Recursive descent over the text; nesting is bounded so hostile input cannot
 * exhaust the stack.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "terminal.h"

#define MAX_DEPTH 64

struct reader {
    const char *p;
};

static void skip_space(struct reader *r)
{
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
        r->p++;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static unsigned read_hex4(const char *p, bool *ok)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0) {
            *ok = false;
            return 0;
        }
        v = v * 16 + (unsigned)h;
    }
    return v;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads a string at r->p (which is '"'); when out is not NULL stores the unescaped copy and,
 * when len is not NULL, its length (which counts the NUL bytes a \u0000 puts inside). */
static bool read_string(struct reader *r, char **out, size_t *len)
{
    if (*r->p != '"')
        return false;
    const char *start = ++r->p;
    char *copy = out ? malloc(strlen(start) + 1) : NULL;
    size_t n = 0;
    if (out && !copy)
        return false;
    bool ok = true;
    while (ok && *r->p && *r->p != '"') {
        char c = *r->p++;
        if ((unsigned char)c < 0x20) {
            ok = false;
        } else if (c != '\\') {
            if (copy)
                copy[n++] = c;
        } else {
            char e = *r->p++;
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                static const char decoded[] = "\"\\/\b\f\n\r\t";
                if (copy)
                    copy[n++] = decoded[simple - "\"\\/bfnrt"];
            } else if (e == 'u') {
                unsigned cp = read_hex4(r->p, &ok);
                if (ok)
                    r->p += 4;
                if (ok && cp >= 0xD800 && cp <= 0xDBFF && r->p[0] == '\\' && r->p[1] == 'u') {
                    unsigned lo = read_hex4(r->p + 2, &ok);
                    if (ok && lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        r->p += 6;
                    }
                }
                if (ok && copy)
                    n += put_utf8(copy + n, cp);
            } else {
                ok = false;
            }
        }
    }
    (void)start;
    if (!ok || *r->p != '"') {
        free(copy);
        return false;
    }
    r->p++;
    if (copy) {
        copy[n] = '\0';
        *out = copy;
        if (len)
            *len = n;
    }
    return true;
}

static bool skip_value(struct reader *r, int depth);

static bool skip_container(struct reader *r, int depth, char close, bool keyed)
{
    r->p++;
    skip_space(r);
    if (*r->p == close) {
        r->p++;
        return true;
    }
    for (;;) {
        skip_space(r);
        if (keyed) {
            if (!read_string(r, NULL, NULL))
                return false;
            skip_space(r);
            if (*r->p++ != ':')
                return false;
        }
        if (!skip_value(r, depth + 1))
            return false;
        skip_space(r);
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p != close)
            return false;
        r->p++;
        return true;
    }
}

static bool skip_literal(struct reader *r, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(r->p, word, n) != 0)
        return false;
    r->p += n;
    return true;
}

static bool skip_number(struct reader *r)
{
    const char *start = r->p;
    if (*r->p == '-')
        r->p++;
    while ((*r->p >= '0' && *r->p <= '9') || *r->p == '.' || *r->p == 'e' || *r->p == 'E' ||
           *r->p == '+' || *r->p == '-')
        r->p++;
    return r->p > start;
}

static bool skip_value(struct reader *r, int depth)
{
    if (depth > MAX_DEPTH)
        return false;
    skip_space(r);
    switch (*r->p) {
    case '{': return skip_container(r, depth, '}', true);
    case '[': return skip_container(r, depth, ']', false);
    case '"': return read_string(r, NULL, NULL);
    case 't': return skip_literal(r, "true");
    case 'f': return skip_literal(r, "false");
    case 'n': return skip_literal(r, "null");
    default: return skip_number(r);
    }
}

/* Positions r at the value of top-level member key. 0 found, -1 missing, -2 malformed. */
static int find_member(struct reader *r, const char *key)
{
    skip_space(r);
    if (*r->p != '{')
        return -2;
    r->p++;
    skip_space(r);
    if (*r->p == '}')
        return -1;
    for (;;) {
        skip_space(r);
        char *name = NULL;
        if (!read_string(r, &name, NULL))
            return -2;
        skip_space(r);
        if (*r->p++ != ':') {
            free(name);
            return -2;
        }
        skip_space(r);
        bool match = strcmp(name, key) == 0;
        free(name);
        if (match)
            return 0;
        if (!skip_value(r, 1))
            return -2;
        skip_space(r);
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        return *r->p == '}' ? -1 : -2;
    }
}

int json_member_bool(const char *json, const char *key, bool *out)
{
    struct reader r = {json};
    int rc = find_member(&r, key);
    if (rc != 0)
        return rc;
    if (skip_literal(&r, "true")) {
        *out = true;
        return 0;
    }
    if (skip_literal(&r, "false")) {
        *out = false;
        return 0;
    }
    return -1;
}

int json_member_string(const char *json, const char *key, char **out)
{
    return json_member_string_with_length(json, key, out, NULL);
}

int json_member_string_with_length(const char *json, const char *key, char **out, size_t *len)
{
    struct reader r = {json};
    int rc = find_member(&r, key);
    if (rc != 0)
        return rc;
    return read_string(&r, out, len) ? 0 : -1;
}

int json_member_integer(const char *json, const char *key, long long *out)
{
    struct reader r = {json};
    int rc = find_member(&r, key);
    if (rc != 0)
        return rc;
    const char *start = r.p;
    if (*r.p == '-')
        r.p++;
    if (*r.p < '0' || *r.p > '9')
        return -1;
    while (*r.p >= '0' && *r.p <= '9')
        r.p++;
    if (*r.p == '.' || *r.p == 'e' || *r.p == 'E')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(start, &end, 10);
    if (errno || end != r.p)
        return -1;
    *out = v;
    return 0;
}

/* ---- writing --------------------------------------------------------------------------------- */

void json_write_string(FILE *out, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            fprintf(out, "\\%c", c);
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            fprintf(out, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            fputc(c, out);
            i++;
        } else {
            size_t n = utf8_sequence_length(u + i, len - i);
            if (n)
                fwrite(u + i, 1, n, out);
            else
                fputs("\\ufffd", out);
            i += n ? n : 1;
        }
    }
    fputc('"', out);
}
