/*
 * terminal.h — showing an agent's text to a person at a terminal without letting it drive
 * the terminal.
 *
 * The text of a reply comes from the process being changed, and may hold what the process's
 * variables hold: an escape sequence in it would be obeyed by the operator's terminal (change
 * its title, move the cursor over earlier lines, on some terminals answer with input). So the
 * CLI writes control characters, C1 controls and bytes that are not UTF-8 as visible escapes
 * when its output is a terminal and --raw was not given.
 */
#ifndef HOTPATCH_CLI_TERMINAL_H
#define HOTPATCH_CLI_TERMINAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Writes len bytes of text to out with every byte 0x00-0x1F except '\n', and 0x7F, as \e, \t,
 * \r or \xNN; C1 controls (UTF-8 C2 80 to C2 9F) as \u0080 to \u009f; bytes that are not valid
 * UTF-8 as \xNN; all else unchanged. With whole_value (the text is one value and its final
 * newline), newlines before the last byte are written as \n too, so a value cannot forge a
 * line of output. */
void write_escaped(FILE *out, const char *text, size_t len, bool whole_value);

/* The length of the valid UTF-8 sequence of two or more bytes at s (n bytes available), or
 * 0 when s does not start one (RFC 3629: no overlong forms, surrogates or code points above
 * U+10FFFF). */
size_t utf8_sequence_length(const unsigned char *s, size_t n);

/* The text of a table cell from a process (its command line, a socket path): escaped as
 * write_escaped does for a whole value, every newline included, so one cell is one line.
 * malloc'd; NULL when out of memory. */
char *escape_cell(const char *text, size_t len);

#endif
