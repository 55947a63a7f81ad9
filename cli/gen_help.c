/*
 * gen_help.c — writes the clients' offline help at build time, from the agent's own code.
 *
 *   gen_help HEADER DATAFILE
 *
 * `hotpatch help [FAMILY]` without -p must print the command list without a running agent,
 * and it must never drift from what the agent accepts. So this program, linked with
 * libhotpatch.a and run by the build (never installed), walks the dispatch table
 * (hp_for_each_command) for its families and has the agent's own `help` handler answer
 * `help` and `help FAMILY` for each (hp_handle_line), in both reply forms. It writes:
 *   HEADER    a C header for the C client: the table offline_help[] of {family, text, json}
 *   DATAFILE  the same as one JSON object, for the Python client:
 *             {"version":...,"help":[{"family":...,"text":...,"json":...},...]}
 * So the offline help is byte for byte what the agent of the same build answers.
 * Exit status 0; 1 when a file cannot be written; 2 with a usage line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"

#define FAMILIES_LIMIT 64

struct families {
    const char *names[FAMILIES_LIMIT];
    size_t count;
};

static void add_family(const struct hp_command *c, void *context)
{
    struct families *f = context;
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->names[i], c->family) == 0)
            return;
    if (f->count < FAMILIES_LIMIT)
        f->names[f->count++] = c->family;
}

/* The agent's answer to `help [family]` in the plain or the JSON form, malloc'd. */
static char *answer_help(const char *family, bool as_json)
{
    char line[128];
    snprintf(line, sizeof line, "%shelp%s%s", as_json ? "json " : "", family[0] ? " " : "",
             family);
    struct hp_reply *reply = hp_reply_new();
    bool json = false;
    enum hp_after after = HP_AFTER_CLOSE;
    hp_handle_line(line, strlen(line), NULL, false, reply, &json, &after);
    size_t len = 0;
    char *text = hp_reply_render(reply, json, &len);
    hp_reply_free(reply);
    return text;
}

/* s as a C string literal (the header) or a JSON string (the data file). */
static void put_string(FILE *out, const char *s, bool c_literal)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, c_literal ? "\\%03o" : "\\u%04x", *p);
        else if (*p >= 0x80 && c_literal)
            fprintf(out, "\\%03o", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void put_entry(FILE *header, FILE *data, const char *family, bool first)
{
    char *text = answer_help(family, false), *json = answer_help(family, true);
    if (!text || !json) {
        fprintf(stderr, "gen_help: out of memory\n");
        exit(1);
    }
    fputs("    {", header);
    put_string(header, family, true);
    fputs(",\n     ", header);
    put_string(header, text, true);
    fputs(",\n     ", header);
    put_string(header, json, true);
    fputs("},\n", header);
    fprintf(data, "%s\n  {\"family\": ", first ? "" : ",");
    put_string(data, family, false);
    fputs(", \"text\": ", data);
    put_string(data, text, false);
    fputs(", \"json\": ", data);
    put_string(data, json, false);
    fputc('}', data);
    free(text);
    free(json);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_help HEADER DATAFILE\n");
        return 2;
    }
    FILE *header = fopen(argv[1], "w"), *data = fopen(argv[2], "w");
    if (!header || !data) {
        fprintf(stderr, "gen_help: cannot write %s\n", header ? argv[2] : argv[1]);
        return 1;
    }
    struct families families = {.count = 0};
    hp_for_each_command(add_family, &families);
    fputs("/* offline_help_table.h — the agent's answers to help and help FAMILY, generated at build "
          "time\n * by cli/gen_help.c from the dispatch table; do not edit. */\n"
          "static const struct offline_help_entry {\n    const char *family, *text, *json;\n"
          "} offline_help[] = {\n", header);
    fprintf(data, "{\"version\": \"%s\", \"help\": [", HOTPATCH_VERSION);
    put_entry(header, data, "", true);
    for (size_t i = 0; i < families.count; i++)
        put_entry(header, data, families.names[i], false);
    fputs("};\n", header);
    fputs("\n]}\n", data);
    if (ferror(header) || ferror(data) || fclose(header) != 0 || fclose(data) != 0) {
        fprintf(stderr, "gen_help: cannot write %s or %s\n", argv[1], argv[2]);
        return 1;
    }
    return 0;
}
