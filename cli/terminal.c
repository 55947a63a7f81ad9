/*
 * terminal.c — escaping an agent's text for a terminal. See terminal.h for why.
 *
 * UTF-8 is checked strictly (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. A byte that does not start a valid sequence is escaped alone and the next byte is
 * looked at afresh, so every byte of a broken sequence shows as \xNN.
 */
#include <stdlib.h>
#include <string.h>

#include "terminal.h"

size_t utf8_sequence_length(const unsigned char *s, size_t n)
{
    unsigned char lead = s[0];
    size_t len;
    unsigned char low = 0x80, high = 0xBF; /* the range of the second byte */
    if (lead >= 0xC2 && lead <= 0xDF)
        len = 2;
    else if (lead >= 0xE0 && lead <= 0xEF)
        len = 3;
    else if (lead >= 0xF0 && lead <= 0xF4)
        len = 4;
    else
        return 0;
    if (lead == 0xE0)
        low = 0xA0;          /* below: overlong */
    else if (lead == 0xED)
        high = 0x9F;         /* above: surrogates */
    else if (lead == 0xF0)
        low = 0x90;          /* below: overlong */
    else if (lead == 0xF4)
        high = 0x8F;         /* above: beyond U+10FFFF */
    if (n < len || s[1] < low || s[1] > high)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

static void write_control(FILE *out, unsigned char c)
{
    if (c == 0x1B)
        fputs("\\e", out);
    else if (c == '\t')
        fputs("\\t", out);
    else if (c == '\r')
        fputs("\\r", out);
    else if (c == '\n')
        fputs("\\n", out);
    else
        fprintf(out, "\\x%02x", c);
}

void write_escaped(FILE *out, const char *text, size_t len, bool whole_value)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        bool line_break_kept = c == '\n' && (!whole_value || i == len - 1);
        if (line_break_kept || (c >= 0x20 && c < 0x7F)) {
            fputc(c, out);
            i++;
            continue;
        }
        if (c < 0x80) {
            write_control(out, c);
            i++;
            continue;
        }
        size_t n = utf8_sequence_length(s + i, len - i);
        if (n == 0)
            fprintf(out, "\\x%02x", c);
        else if (n == 2 && c == 0xC2 && s[i + 1] <= 0x9F)
            fprintf(out, "\\u%04x", s[i + 1]);
        else
            fwrite(s + i, 1, n, out);
        i += n ? n : 1;
    }
}

char *escape_cell(const char *text, size_t len)
{
    char *out = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&out, &size);
    if (!f)
        return NULL;
    bool final_newline = len && text[len - 1] == '\n';
    write_escaped(f, text, final_newline ? len - 1 : len, true);
    if (final_newline)
        fputs("\\n", f);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
