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

/* Finds top-level member `key` of the object in `json`. Returns 0 and sets *out, -1 when the
 * member is missing or of another type, -2 when the text is not a JSON object. */
int json_member_bool(const char *json, const char *key, bool *out);
/* As above for a string member; *out is a malloc'd, unescaped, NUL-terminated copy. */
int json_member_string(const char *json, const char *key, char **out);
/* As json_member_string, and *len (when not NULL) is the length of the copy: a \u0000 in the
 * JSON puts a NUL byte inside it, which strlen would not count. */
int json_member_string_with_length(const char *json, const char *key, char **out, size_t *len);

#endif
