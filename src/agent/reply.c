/*
 * reply.c — the reply builder and its two renderings.
 *
 * Handlers describe what they found (a value, a list of records, a message, or an error) and
 * never format protocol output themselves. The server then renders the same reply either as
 * plain text for people (`nc`, the CLI) or as one JSON line for programs. Because the JSON form
 * also carries the plain rendering in "text", every client prints exactly what `nc` prints
 * while still telling success from failure by "ok", never by scraping prose.
 *
 * Memory is bounded: the content a handler adds is counted and a reply that would pass
 * HP_REPLY_MAX becomes an error. The first error wins; calls after it do nothing, so handlers
 * can build without checking every step. Out of memory is also turned into an error reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

struct field {
    char *key;
    char *text;
    enum hp_json_kind kind;
    int item;                  /* index of the item it belongs to; -1 for a top-level field */
};

struct hp_reply {
    bool failed;               /* an error was set */
    char error[HP_ERROR_MAX];
    char *message;
    char *plain;               /* handler-written plain rendering, overrides the default */
    bool has_value;
    struct field value;
    bool is_list;              /* JSON carries "items" even when it is empty */
    char *empty_text;          /* plain rendering of an empty list */
    struct field *fields;
    size_t field_count, field_capacity;
    int item_count;
    size_t bytes;              /* content added so far, checked against HP_REPLY_MAX */
};

struct hp_reply *hp_reply_new(void)
{
    return calloc(1, sizeof(struct hp_reply));
}

void hp_reply_free(struct hp_reply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->field_count; i++) {
        free(r->fields[i].key);
        free(r->fields[i].text);
    }
    free(r->fields);
    free(r->value.text);
    free(r->message);
    free(r->plain);
    free(r->empty_text);
    free(r);
}

bool hp_reply_ok(const struct hp_reply *r)
{
    return !r->failed;
}

const char *hp_reply_error_text(const struct hp_reply *r)
{
    return r->failed ? r->error : "";
}

static void set_error_v(struct hp_reply *r, const char *fmt, va_list ap)
{
    if (r->failed)
        return;
    r->failed = true;
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    /* An error is one line: fold any newline a caller's text carried. */
    for (char *p = r->error; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

const char *hp_reply_field_text(const struct hp_reply *r, const char *key)
{
    for (size_t i = 0; i < r->field_count; i++)
        if (r->fields[i].item < 0 && strcmp(r->fields[i].key, key) == 0)
            return r->fields[i].text;
    return NULL;
}

const char *hp_reply_message_text(const struct hp_reply *r)
{
    return r->message;
}

void hp_reply_error(struct hp_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error_v(r, fmt, ap);
    va_end(ap);
}

static void out_of_memory(struct hp_reply *r)
{
    hp_reply_error(r, "out of memory while building the reply");
}

/* Counts n more bytes of content; false (and an error) when the reply would grow too big. */
static bool account(struct hp_reply *r, size_t n)
{
    if (r->failed)
        return false;
    r->bytes += n + 16;
    if (r->bytes > HP_REPLY_MAX) {
        hp_reply_error(r, "reply would exceed %u bytes; ask for less (e.g. one name instead of "
                       "a list)", HP_REPLY_MAX);
        return false;
    }
    return true;
}

static char *dup_or_fail(struct hp_reply *r, const char *s)
{
    char *copy = strdup(s ? s : "");
    if (!copy)
        out_of_memory(r);
    return copy;
}

static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

/* Formats text the reply will own, counted against the limit; NULL (and an error) on failure. */
static char *format_counted(struct hp_reply *r, const char *fmt, va_list ap)
{
    char *s = vformat(fmt, ap);
    if (!s) {
        out_of_memory(r);
        return NULL;
    }
    if (!account(r, strlen(s))) {
        free(s);
        return NULL;
    }
    return s;
}

void hp_reply_message(struct hp_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = format_counted(r, fmt, ap);
    va_end(ap);
    if (!s)
        return;
    free(r->message);
    r->message = s;
}

static void plain_add(struct hp_reply *r, bool append, const char *fmt, va_list ap)
{
    char *s = format_counted(r, fmt, ap);
    if (!s)
        return;
    if (append && r->plain) {
        char *joined = NULL;
        if (asprintf(&joined, "%s%s", r->plain, s) < 0) {
            free(s);
            out_of_memory(r);
            return;
        }
        free(s);
        s = joined;
    }
    free(r->plain);
    r->plain = s;
}

void hp_reply_plain(struct hp_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    plain_add(r, false, fmt, ap);
    va_end(ap);
}

void hp_reply_plain_append(struct hp_reply *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    plain_add(r, true, fmt, ap);
    va_end(ap);
}

void hp_reply_value(struct hp_reply *r, const char *text, enum hp_json_kind kind)
{
    if (!account(r, strlen(text)))
        return;
    char *copy = dup_or_fail(r, text);
    if (!copy)
        return;
    free(r->value.text);
    r->value.text = copy;
    r->value.kind = kind;
    r->has_value = true;
}

void hp_reply_list(struct hp_reply *r, const char *empty_text)
{
    r->is_list = true;
    free(r->empty_text);
    r->empty_text = dup_or_fail(r, empty_text);
}

static void add_field(struct hp_reply *r, int item, const char *key, const char *text,
                      enum hp_json_kind kind)
{
    if (!account(r, strlen(key) + strlen(text)))
        return;
    if (r->field_count == r->field_capacity) {
        size_t cap = r->field_capacity ? r->field_capacity * 2 : 32;
        struct field *grown = realloc(r->fields, cap * sizeof *grown);
        if (!grown) {
            out_of_memory(r);
            return;
        }
        r->fields = grown;
        r->field_capacity = cap;
    }
    struct field f = {dup_or_fail(r, key), dup_or_fail(r, text), kind, item};
    if (!f.key || !f.text) {
        free(f.key);
        free(f.text);
        return;
    }
    r->fields[r->field_count++] = f;
}

void hp_reply_field(struct hp_reply *r, const char *key, const char *text, enum hp_json_kind kind)
{
    add_field(r, -1, key, text, kind);
}

void hp_reply_item_begin(struct hp_reply *r)
{
    r->is_list = true;
    r->item_count++;
}

void hp_reply_item(struct hp_reply *r, const char *key, const char *text, enum hp_json_kind kind)
{
    add_field(r, r->item_count - 1, key, text, kind);
}

void hp_reply_item_str(struct hp_reply *r, const char *key, const char *text)
{
    hp_reply_item(r, key, text ? text : "", HP_JSON_STRING);
}

void hp_reply_item_int(struct hp_reply *r, const char *key, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    hp_reply_item(r, key, buf, HP_JSON_NUMBER);
}

void hp_reply_item_bool(struct hp_reply *r, const char *key, bool v)
{
    hp_reply_item(r, key, v ? "true" : "false", HP_JSON_BOOL);
}

void hp_reply_item_ptr(struct hp_reply *r, const char *key, const void *p)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%p", p);
    hp_reply_item(r, key, buf, HP_JSON_STRING);
}

/* ---- rendering ----------------------------------------------------------------------------- */

struct buffer {
    char *data;
    size_t len, cap;
    bool failed;
};

static void put(struct buffer *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(struct buffer *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_repeat(struct buffer *b, char c, size_t n)
{
    while (n--)
        put(b, &c, 1);
}

/* Display width: code points, not bytes, so UTF-8 text lines up. */
static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* True when s starts with a C1 control character (U+0080..U+009F, UTF-8 C2 80..C2 9F): some
 * terminals act on them as on ESC sequences (U+009B is CSI). */
static bool starts_with_c1(const char *s)
{
    return (unsigned char)s[0] == 0xC2 && (unsigned char)s[1] >= 0x80 &&
           (unsigned char)s[1] <= 0x9F;
}

/* A table cell: control characters (C0, DEL, C1) shown as spaces so a row stays one line and
 * a program's string cannot drive the reader's terminal. */
static void put_cell(struct buffer *b, const char *s)
{
    for (; *s; s++) {
        if (starts_with_c1(s)) {
            put(b, " ", 1);
            s++;
            continue;
        }
        char c = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
        put(b, &c, 1);
    }
}

/*
 * One line of text (an error or a message, which may quote a program's string): control
 * characters are written as escapes (\n, \t, \r, \e, \xNN, C1 as \u0080..\u009f), so the
 * line can never become two lines or move a terminal's cursor. The newline is added.
 */
static void put_escaped_line(struct buffer *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (starts_with_c1(s)) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned char)s[1]);
            puts_(b, esc);
            s++;
        } else if (c == '\n' || c == '\t' || c == '\r' || c == 0x1b) {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : 'e';
            put(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            puts_(b, esc);
        } else {
            put(b, s, 1);
        }
    }
    puts_(b, "\n");
}

#define MAX_COLUMNS 16
#define MAX_PADDED_WIDTH 48  /* wider cells are not used to pad their column */

/* Columns are the keys of the first item, in order; header is the key in capitals. */
static void render_table(const struct hp_reply *r, struct buffer *b)
{
    const char *keys[MAX_COLUMNS];
    size_t widths[MAX_COLUMNS];
    size_t columns = 0;
    for (size_t i = 0; i < r->field_count && r->fields[i].item <= 0; i++) {
        if (r->fields[i].item == 0 && columns < MAX_COLUMNS) {
            keys[columns] = r->fields[i].key;
            widths[columns++] = strlen(r->fields[i].key);
        }
    }
    for (size_t i = 0; i < r->field_count; i++) {
        const struct field *f = &r->fields[i];
        for (size_t c = 0; c < columns && f->item >= 0; c++) {
            size_t w = display_width(f->text);
            if (strcmp(keys[c], f->key) == 0 && w > widths[c] && w <= MAX_PADDED_WIDTH)
                widths[c] = w;
        }
    }
    for (size_t c = 0; c < columns; c++) {
        for (const char *k = keys[c]; *k; k++) {
            char up = (*k >= 'a' && *k <= 'z') ? (char)(*k - 32) : *k;
            put(b, &up, 1);
        }
        if (c + 1 < columns)
            put_repeat(b, ' ', widths[c] - strlen(keys[c]) + 2);
    }
    puts_(b, "\n");
    size_t next = 0;
    for (int item = 0; item < r->item_count; item++) {
        for (size_t c = 0; c < columns; c++) {
            const char *text = "";
            for (size_t i = next; i < r->field_count && r->fields[i].item <= item; i++)
                if (r->fields[i].item == item && strcmp(r->fields[i].key, keys[c]) == 0)
                    text = r->fields[i].text;
            put_cell(b, text);
            size_t w = display_width(text);
            if (c + 1 < columns)
                put_repeat(b, ' ', (w < widths[c] ? widths[c] - w : 0) + 2);
        }
        puts_(b, "\n");
        while (next < r->field_count && r->fields[next].item <= item)
            next++;
    }
}

static void put_line(struct buffer *b, const char *s)
{
    puts_(b, s);
    if (!*s || s[strlen(s) - 1] != '\n')
        puts_(b, "\n");
}

static void render_plain(const struct hp_reply *r, struct buffer *b)
{
    if (r->failed) {
        puts_(b, "error: ");
        put_escaped_line(b, r->error);
    } else if (r->plain) {
        put_line(b, r->plain);
    } else if (r->has_value) {
        put_line(b, r->value.text);
    } else if (r->is_list && r->item_count > 0) {
        render_table(r, b);
    } else if (r->is_list && r->empty_text) {
        put_line(b, r->empty_text);
    } else if (r->message) {
        put_escaped_line(b, r->message);
    } else {
        puts_(b, "ok\n");
    }
}

/* A JSON string; bytes that are not valid UTF-8 become U+FFFD so the line stays valid JSON. */
static void put_json_bytes(struct buffer *b, const char *s, size_t len)
{
    puts_(b, "\"");
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(b, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            puts_(b, esc);
            i++;
        } else if (c < 0x80) {
            put(b, (const char *)&s[i], 1);
            i++;
        } else {
            size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
            if (i + n <= len && hp_utf8_valid(&s[i], n, NULL)) {
                put(b, &s[i], n);
                i += n;
            } else {
                puts_(b, "\\ufffd");
                i++;
            }
        }
    }
    puts_(b, "\"");
}

static void put_json_string(struct buffer *b, const char *s)
{
    put_json_bytes(b, s, strlen(s));
}

char *hp_json_quote(const char *s, size_t len)
{
    struct buffer b = {0};
    put_json_bytes(&b, s, len);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

static void put_json_value(struct buffer *b, const char *text, enum hp_json_kind kind)
{
    switch (kind) {
    case HP_JSON_NUMBER:
    case HP_JSON_BOOL:
    case HP_JSON_RAW: puts_(b, text); break;
    case HP_JSON_NULL: puts_(b, "null"); break;
    default: put_json_string(b, text); break;
    }
}

static void put_json_member(struct buffer *b, const char *key, const char *text,
                            enum hp_json_kind kind)
{
    puts_(b, ",");
    put_json_string(b, key);
    puts_(b, ":");
    put_json_value(b, text, kind);
}

static void render_json_items(const struct hp_reply *r, struct buffer *b)
{
    puts_(b, ",\"items\":[");
    size_t i = 0;
    while (i < r->field_count && r->fields[i].item < 0)
        i++;
    for (int item = 0; item < r->item_count; item++) {
        puts_(b, item ? ",{" : "{");
        bool first = true;
        for (; i < r->field_count && r->fields[i].item == item; i++) {
            if (!first)
                puts_(b, ",");
            first = false;
            put_json_string(b, r->fields[i].key);
            puts_(b, ":");
            put_json_value(b, r->fields[i].text, r->fields[i].kind);
        }
        puts_(b, "}");
    }
    puts_(b, "]");
}

static void render_json(const struct hp_reply *r, const char *plain, struct buffer *b)
{
    if (r->failed) {
        puts_(b, "{\"ok\":false");
        put_json_member(b, "error", r->error, HP_JSON_STRING);
    } else {
        puts_(b, "{\"ok\":true");
        if (r->has_value)
            put_json_member(b, "value", r->value.text, r->value.kind);
        for (size_t i = 0; i < r->field_count; i++)
            if (r->fields[i].item < 0)
                put_json_member(b, r->fields[i].key, r->fields[i].text, r->fields[i].kind);
        if (r->is_list)
            render_json_items(r, b);
        if (r->message)
            put_json_member(b, "message", r->message, HP_JSON_STRING);
    }
    put_json_member(b, "text", plain, HP_JSON_STRING);
    puts_(b, "}\n");
}

char *hp_reply_render(struct hp_reply *r, bool json, size_t *len)
{
    struct buffer plain = {0};
    render_plain(r, &plain);
    if (plain.failed) {
        free(plain.data);
        return NULL;
    }
    if (!json) {
        *len = plain.len;
        return plain.data;
    }
    struct buffer out = {0};
    render_json(r, plain.data, &out);
    free(plain.data);
    if (out.failed) {
        free(out.data);
        return NULL;
    }
    *len = out.len;
    return out.data;
}
