/*
 * value.c — typed values: type names, parsing, formatting and atomic access.
 *
 * Every value that crosses the socket is text; every value in the program is a C object of a
 * known type. This file is the only place that converts between the two, so the rules (what
 * a valid int is, how a double is printed so it reads back identically, which words a bool
 * accepts) are stated once. Parsing is strict: the whole text must be consumed, ranges are
 * checked against the destination type, and a refusal says what was wrong and what is
 * accepted. Loads and stores go through __atomic builtins of the type's width, so a reader in
 * the program never sees a torn value.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"

struct type_info {
    enum hotpatch_type type;
    const char *name;
    size_t size;
};

static const struct type_info types[] = {
    {HOTPATCH_TYPE_BOOL, "bool", sizeof(bool)},
    {HOTPATCH_TYPE_INT, "int", sizeof(int)},
    {HOTPATCH_TYPE_UINT, "uint", sizeof(unsigned int)},
    {HOTPATCH_TYPE_LONG, "long", sizeof(long)},
    {HOTPATCH_TYPE_ULONG, "ulong", sizeof(unsigned long)},
    {HOTPATCH_TYPE_LLONG, "llong", sizeof(long long)},
    {HOTPATCH_TYPE_ULLONG, "ullong", sizeof(unsigned long long)},
    {HOTPATCH_TYPE_FLOAT, "float", sizeof(float)},
    {HOTPATCH_TYPE_DOUBLE, "double", sizeof(double)},
    {HOTPATCH_TYPE_STRING, "string", 0},
    {HOTPATCH_TYPE_SCHAR, "schar", sizeof(signed char)},
    {HOTPATCH_TYPE_UCHAR, "uchar", sizeof(unsigned char)},
    {HOTPATCH_TYPE_SHORT, "short", sizeof(short)},
    {HOTPATCH_TYPE_USHORT, "ushort", sizeof(unsigned short)},
};

/* Other spellings users reach for; each maps to one of the names above. */
static const struct {
    const char *alias;
    enum hotpatch_type type;
} type_aliases[] = {
    {"unsigned", HOTPATCH_TYPE_UINT}, {"int32", HOTPATCH_TYPE_INT},
    {"uint32", HOTPATCH_TYPE_UINT},   {"int64", HOTPATCH_TYPE_LLONG},
    {"uint64", HOTPATCH_TYPE_ULLONG}, {"str", HOTPATCH_TYPE_STRING},
    {"boolean", HOTPATCH_TYPE_BOOL},  {"int8", HOTPATCH_TYPE_SCHAR},
    {"uint8", HOTPATCH_TYPE_UCHAR},   {"int16", HOTPATCH_TYPE_SHORT},
    {"uint16", HOTPATCH_TYPE_USHORT},
};

static const struct type_info *type_info_of(enum hotpatch_type type)
{
    for (size_t i = 0; i < HP_ARRAY_SIZE(types); i++)
        if (types[i].type == type)
            return &types[i];
    return NULL;
}

const char *hp_type_name(enum hotpatch_type type)
{
    const struct type_info *t = type_info_of(type);
    return t ? t->name : "unknown";
}

size_t hp_type_size(enum hotpatch_type type)
{
    const struct type_info *t = type_info_of(type);
    return t ? t->size : 0;
}

enum hotpatch_type hp_type_from_name(const char *name)
{
    for (size_t i = 0; i < HP_ARRAY_SIZE(types); i++)
        if (strcmp(types[i].name, name) == 0)
            return types[i].type;
    for (size_t i = 0; i < HP_ARRAY_SIZE(type_aliases); i++)
        if (strcmp(type_aliases[i].alias, name) == 0)
            return type_aliases[i].type;
    return 0;
}

const char *hp_type_names(void)
{
    return "bool, schar, uchar, short, ushort, int, uint, long, ulong, llong, ullong, float, "
           "double, string";
}

/* ---- parsing ------------------------------------------------------------------------------ */

static bool is_signed_integer_type(enum hotpatch_type t)
{
    return t == HOTPATCH_TYPE_SCHAR || t == HOTPATCH_TYPE_SHORT || t == HOTPATCH_TYPE_INT ||
           t == HOTPATCH_TYPE_LONG || t == HOTPATCH_TYPE_LLONG;
}

static bool is_unsigned_integer_type(enum hotpatch_type t)
{
    return t == HOTPATCH_TYPE_UCHAR || t == HOTPATCH_TYPE_USHORT || t == HOTPATCH_TYPE_UINT ||
           t == HOTPATCH_TYPE_ULONG || t == HOTPATCH_TYPE_ULLONG;
}

static void signed_range(enum hotpatch_type t, long long *lo, long long *hi)
{
    switch (t) {
    case HOTPATCH_TYPE_SCHAR: *lo = SCHAR_MIN; *hi = SCHAR_MAX; break;
    case HOTPATCH_TYPE_SHORT: *lo = SHRT_MIN; *hi = SHRT_MAX; break;
    case HOTPATCH_TYPE_INT: *lo = INT_MIN; *hi = INT_MAX; break;
    case HOTPATCH_TYPE_LONG: *lo = LONG_MIN; *hi = LONG_MAX; break;
    default: *lo = LLONG_MIN; *hi = LLONG_MAX; break;
    }
}

static unsigned long long unsigned_max(enum hotpatch_type t)
{
    switch (t) {
    case HOTPATCH_TYPE_UCHAR: return UCHAR_MAX;
    case HOTPATCH_TYPE_USHORT: return USHRT_MAX;
    case HOTPATCH_TYPE_UINT: return UINT_MAX;
    case HOTPATCH_TYPE_ULONG: return ULONG_MAX;
    default: return ULLONG_MAX;
    }
}

/* 16 for a 0x number, else 10: a leading zero is a decimal digit, as the protocol says. */
static int integer_base(const char *text)
{
    const char *p = text + (*text == '+' || *text == '-');
    return p[0] == '0' && (p[1] == 'x' || p[1] == 'X') ? 16 : 10;
}

/* Digits only (after an optional sign and 0x prefix): no spaces, no trailing text. */
static bool looks_like_integer(const char *text, bool allow_minus)
{
    const char *p = text;
    if (*p == '+' || (allow_minus && *p == '-'))
        p++;
    bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    if (hex)
        p += 2;
    if (*p == '\0')
        return false;
    for (; *p; p++)
        if (!(hex ? isxdigit((unsigned char)*p) : isdigit((unsigned char)*p)))
            return false;
    return true;
}

static int parse_signed(enum hotpatch_type t, const char *text, union hp_scalar *out, char *why,
                        size_t cap)
{
    long long lo, hi;
    signed_range(t, &lo, &hi);
    const char *name = hp_type_name(t);
    if (!looks_like_integer(text, true)) {
        snprintf(why, cap, "'%s' is not a valid %s: expected a whole number from %lld to %lld",
                 text, name, lo, hi);
        return -1;
    }
    errno = 0;
    long long v = strtoll(text, NULL, integer_base(text)); /* "010" is ten: no octal */
    if (errno == ERANGE || v < lo || v > hi) {
        snprintf(why, cap, "%s is out of range for %s: expected %lld to %lld", text, name, lo, hi);
        return -1;
    }
    switch (t) {
    case HOTPATCH_TYPE_SCHAR: out->sc = (signed char)v; break;
    case HOTPATCH_TYPE_SHORT: out->s = (short)v; break;
    case HOTPATCH_TYPE_INT: out->i = (int)v; break;
    case HOTPATCH_TYPE_LONG: out->l = (long)v; break;
    default: out->ll = v; break;
    }
    return 0;
}

static int parse_unsigned(enum hotpatch_type t, const char *text, union hp_scalar *out,
                          char *why, size_t cap)
{
    unsigned long long hi = unsigned_max(t);
    const char *name = hp_type_name(t);
    if (text[0] == '-' && looks_like_integer(text, true)) {
        snprintf(why, cap, "%s is out of range for %s: expected 0 to %llu", text, name, hi);
        return -1;
    }
    if (!looks_like_integer(text, false)) {
        snprintf(why, cap, "'%s' is not a valid %s: expected a whole number from 0 to %llu",
                 text, name, hi);
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(text, NULL, integer_base(text));
    if (errno == ERANGE || v > hi) {
        snprintf(why, cap, "%s is out of range for %s: expected 0 to %llu", text, name, hi);
        return -1;
    }
    switch (t) {
    case HOTPATCH_TYPE_UCHAR: out->uc = (unsigned char)v; break;
    case HOTPATCH_TYPE_USHORT: out->us = (unsigned short)v; break;
    case HOTPATCH_TYPE_UINT: out->u = (unsigned int)v; break;
    case HOTPATCH_TYPE_ULONG: out->ul = (unsigned long)v; break;
    default: out->ull = v; break;
    }
    return 0;
}

static int parse_floating(enum hotpatch_type t, const char *text, union hp_scalar *out,
                          char *why, size_t cap)
{
    const char *name = hp_type_name(t);
    char *end = NULL;
    errno = 0;
    double v = (*text && !isspace((unsigned char)*text)) ? strtod(text, &end) : 0.0;
    if (end == NULL || end == text || *end != '\0') {
        snprintf(why, cap, "'%s' is not a valid %s: expected a decimal number such as 1.5 or 2e-3",
                 text, name);
        return -1;
    }
    double limit = t == HOTPATCH_TYPE_FLOAT ? FLT_MAX : DBL_MAX;
    if (!isfinite(v) || (errno == ERANGE && fabs(v) > 1.0) || fabs(v) > limit) {
        snprintf(why, cap, "%s is out of range for %s: expected a finite number of magnitude "
                 "at most %g", text, name, limit);
        return -1;
    }
    /* A nonzero number that the type cannot hold would be stored as 0 without a word: strtod
     * says so for a double (ERANGE with 0), the conversion for a float. */
    double smallest = t == HOTPATCH_TYPE_FLOAT ? FLT_TRUE_MIN : DBL_TRUE_MIN;
    bool underflows = (errno == ERANGE && v == 0.0) ||
                      (t == HOTPATCH_TYPE_FLOAT && v != 0.0 && (float)v == 0.0f);
    if (underflows) {
        snprintf(why, cap, "%s is too small for %s: the smallest nonzero magnitude is %g; "
                 "write 0 for zero", text, name, smallest);
        return -1;
    }
    if (t == HOTPATCH_TYPE_FLOAT)
        out->f = (float)v;
    else
        out->d = v;
    return 0;
}

static int parse_bool(const char *text, union hp_scalar *out, char *why, size_t cap)
{
    static const char *const truthy[] = {"true", "1", "yes", "on"};
    static const char *const falsy[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < HP_ARRAY_SIZE(truthy); i++) {
        if (strcasecmp(text, truthy[i]) == 0) {
            out->b = true;
            return 0;
        }
        if (strcasecmp(text, falsy[i]) == 0) {
            out->b = false;
            return 0;
        }
    }
    snprintf(why, cap, "'%s' is not a valid bool: expected true, false, 1, 0, yes, no, on or off",
             text);
    return -1;
}

int hp_parse_scalar(enum hotpatch_type type, const char *text, union hp_scalar *out, char *why,
                    size_t why_cap)
{
    memset(out, 0, sizeof *out);
    if (type == HOTPATCH_TYPE_BOOL)
        return parse_bool(text, out, why, why_cap);
    if (is_signed_integer_type(type))
        return parse_signed(type, text, out, why, why_cap);
    if (is_unsigned_integer_type(type))
        return parse_unsigned(type, text, out, why, why_cap);
    if (type == HOTPATCH_TYPE_FLOAT || type == HOTPATCH_TYPE_DOUBLE)
        return parse_floating(type, text, out, why, why_cap);
    snprintf(why, why_cap, "type %s is not a scalar type", hp_type_name(type));
    return -1;
}

/* ---- formatting --------------------------------------------------------------------------- */

/* The shortest %g precision that reads back as the same value. */
static int format_floating(double v, bool is_float, char *buf, size_t cap)
{
    int first = is_float ? 6 : 15, last = is_float ? 9 : 17;
    int n = 0;
    for (int prec = first; prec <= last; prec++) {
        n = snprintf(buf, cap, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v)
            break;
    }
    return n;
}

int hp_format_scalar(enum hotpatch_type type, const union hp_scalar *v, char *buf, size_t cap)
{
    switch (type) {
    case HOTPATCH_TYPE_BOOL: return snprintf(buf, cap, "%s", v->b ? "true" : "false");
    case HOTPATCH_TYPE_SCHAR: return snprintf(buf, cap, "%d", v->sc);
    case HOTPATCH_TYPE_UCHAR: return snprintf(buf, cap, "%u", v->uc);
    case HOTPATCH_TYPE_SHORT: return snprintf(buf, cap, "%d", v->s);
    case HOTPATCH_TYPE_USHORT: return snprintf(buf, cap, "%u", v->us);
    case HOTPATCH_TYPE_INT: return snprintf(buf, cap, "%d", v->i);
    case HOTPATCH_TYPE_UINT: return snprintf(buf, cap, "%u", v->u);
    case HOTPATCH_TYPE_LONG: return snprintf(buf, cap, "%ld", v->l);
    case HOTPATCH_TYPE_ULONG: return snprintf(buf, cap, "%lu", v->ul);
    case HOTPATCH_TYPE_LLONG: return snprintf(buf, cap, "%lld", v->ll);
    case HOTPATCH_TYPE_ULLONG: return snprintf(buf, cap, "%llu", v->ull);
    case HOTPATCH_TYPE_FLOAT: return format_floating(v->f, true, buf, cap);
    case HOTPATCH_TYPE_DOUBLE: return format_floating(v->d, false, buf, cap);
    default: return snprintf(buf, cap, "?");
    }
}

/* ---- atomic access ------------------------------------------------------------------------ */

void hp_load_scalar(enum hotpatch_type type, const void *addr, union hp_scalar *out)
{
    memset(out, 0, sizeof *out);
    switch (hp_type_size(type)) {
    case 1: {
        uint8_t b = __atomic_load_n((const uint8_t *)addr, __ATOMIC_ACQUIRE);
        if (type == HOTPATCH_TYPE_BOOL)
            out->b = b != 0;
        else
            memcpy(out, &b, sizeof b);
        break;
    }
    case 2: {
        uint16_t w = __atomic_load_n((const uint16_t *)addr, __ATOMIC_ACQUIRE);
        memcpy(out, &w, sizeof w);
        break;
    }
    case 4: {
        uint32_t w = __atomic_load_n((const uint32_t *)addr, __ATOMIC_ACQUIRE);
        memcpy(out, &w, sizeof w);
        break;
    }
    case 8: {
        uint64_t w = __atomic_load_n((const uint64_t *)addr, __ATOMIC_ACQUIRE);
        memcpy(out, &w, sizeof w);
        break;
    }
    default: break;
    }
}

void hp_store_scalar(enum hotpatch_type type, void *addr, const union hp_scalar *v)
{
    switch (hp_type_size(type)) {
    case 1: {
        uint8_t b = type == HOTPATCH_TYPE_BOOL ? (uint8_t)(v->b ? 1 : 0) : v->uc;
        __atomic_store_n((uint8_t *)addr, b, __ATOMIC_RELEASE);
        break;
    }
    case 2: {
        uint16_t w;
        memcpy(&w, v, sizeof w);
        __atomic_store_n((uint16_t *)addr, w, __ATOMIC_RELEASE);
        break;
    }
    case 4: {
        uint32_t w;
        memcpy(&w, v, sizeof w);
        __atomic_store_n((uint32_t *)addr, w, __ATOMIC_RELEASE);
        break;
    }
    case 8: {
        uint64_t w;
        memcpy(&w, v, sizeof w);
        __atomic_store_n((uint64_t *)addr, w, __ATOMIC_RELEASE);
        break;
    }
    default: break;
    }
}

/* ---- text checks -------------------------------------------------------------------------- */

bool hp_utf8_valid(const char *s, size_t len, size_t *bad_offset)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t need;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, min = 0x10000, c &= 0x07;
        } else {
            goto bad;
        }
        if (i + need >= len)
            goto bad;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                goto bad;
            c = (c << 6) | (p[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            goto bad;
        i += need + 1;
    }
    return true;
bad:
    if (bad_offset)
        *bad_offset = i;
    return false;
}

bool hp_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > HP_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.:-", *p))
            return false;
    return true;
}
