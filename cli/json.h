/*
 * json.h — just enough JSON reading for the CLI: fields of the agent's one-line reply object.
 *
 * The agent's replies are a flat JSON object whose members the CLI needs are "ok" (bool),
 * "error" and "text" (strings), and "value" when it is a string (a reply that is one bare
 * value has its newlines escaped on a terminal). This reader walks the object, skipping any
 * other member of any JSON type, and validates as it goes: a malformed reply is reported,
 * never guessed at.
 */
#ifndef HOTPATCH_CLI_JSON_H
#define HOTPATCH_CLI_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Finds top-level member `key` of the object in `json`. Returns 0 and sets *out, -1 when the
 * member is missing or of another type, -2 when the text is not a JSON object. */
int json_member_bool(const char *json, const char *key, bool *out);
/* As above for a string member; *out is a malloc'd, unescaped, NUL-terminated copy. */
int json_member_string(const char *json, const char *key, char **out);
/* As json_member_string, and *len (when not NULL) is the length of the copy: a \u0000 in the
 * JSON puts a NUL byte inside it, which strlen would not count. */
int json_member_string_with_length(const char *json, const char *key, char **out, size_t *len);

/* Writes s[0..len) as a JSON string: '"' and '\\' escaped, control characters (below 0x20,
 * and 0x7F) as \u00XX, valid UTF-8 as it is, and each byte that is not valid UTF-8 as \ufffd. */
void json_write_string(FILE *out, const char *s, size_t len);
/* A top-level member that is a whole number (an integer JSON number within long long).
 * Returns 0, -1 when missing or of another type, -2 when the text is not a JSON object. */
int json_member_integer(const char *json, const char *key, long long *out);

#endif
