/*
 * hotpatch_commands.c — prints the agent's command table in the form another part of the build
 * needs, so that nothing written about the commands can drift from what the agent accepts.
 *
 * The rows come from hp_for_each_command(), the very table the agent dispatches requests and
 * answers `help` with (src/agent/agent.h). The program is linked with libhotpatch.a, run at
 * build time and never installed:
 *
 *   hotpatch_commands text    the agent's `help` lines ("  USAGE   SUMMARY"), for a client's
 *                             offline help
 *   hotpatch_commands scdoc   the command list of hotpatch(1), in scdoc's markup
 *   hotpatch_commands c       a C header holding the table as static data (usage, summary,
 *                             argument counts, whether it changes the process), so a client can
 *                             compile the list in without linking the agent
 *   hotpatch_commands bash    bash arrays for the completion script (family|verb|arguments per
 *                             command, and the variable type names)
 *   hotpatch_commands tsv     one tab-separated line per command, for scripts and tests:
 *                             family, verb ("-" if none), min and max arguments, mutates (0/1),
 *                             usage, summary
 *
 *   hotpatch_commands FORMAT OUTPUT   writes OUTPUT instead of standard output
 *
 * Exit status 0; 1 when OUTPUT cannot be written; 2 with a usage line for an unknown format.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/agent.h"

/* ---- helpers shared by the formats ----------------------------------------------------------- */

/* The usage without its leading "family verb" (or "family"): "[TYPE] NAME", or "". */
static const char *arguments_of(const struct hp_command *c)
{
    const char *p = c->usage + strlen(c->family);
    if (c->verb && *p == ' ' && strncmp(p + 1, c->verb, strlen(c->verb)) == 0)
        p += 1 + strlen(c->verb);
    while (*p == ' ')
        p++;
    return p;
}

static bool mutates(const struct hp_command *c)
{
    return (c->flags & HP_CMD_MUTATES) != 0;
}

/* Writes s with every character in `special` preceded by a backslash. */
static void put_escaped(const char *s, const char *special, FILE *out)
{
    for (; *s; s++) {
        if (strchr(special, *s))
            fputc('\\', out);
        fputc(*s, out);
    }
}

/* ---- text: the agent's own help lines -------------------------------------------------------- */

static void text_row(const struct hp_command *c, void *ctx)
{
    fprintf(ctx, "  %-36s %s\n", c->usage, c->summary);
}

/* ---- scdoc: a term per command, its summary indented below ----------------------------------- */

/* An argument word: placeholders (TYPE, NAME) underlined, brackets and bars as they are. */
static void scdoc_argument(const char *word, size_t len, FILE *out)
{
    size_t lead = 0, tail = 0;
    while (lead < len && strchr("[|", word[lead]))
        lead++;
    while (tail < len - lead && strchr("]|", word[len - 1 - tail]))
        tail++;
    fprintf(out, " %.*s", (int)lead, word);
    if (len > lead + tail) {
        fputc('_', out);
        for (size_t i = lead; i < len - tail; i++) {
            if (strchr("*_\\", word[i]))
                fputc('\\', out);
            fputc(word[i], out);
        }
        fputc('_', out);
    }
    fprintf(out, "%.*s", (int)tail, word + len - tail);
}

static void scdoc_row(const struct hp_command *c, void *ctx)
{
    FILE *out = ctx;
    fputc('*', out);
    put_escaped(c->family, "*_\\", out);
    if (c->verb) {
        fputc(' ', out);
        put_escaped(c->verb, "*_\\", out);
    }
    fputc('*', out);
    for (const char *p = arguments_of(c); *p;) {
        size_t len = strcspn(p, " ");
        scdoc_argument(p, len, out);
        p += len;
        p += strspn(p, " ");
    }
    fputs("\n\t", out);
    put_escaped(c->summary, "*_\\", out);
    /* "++" breaks the line; scdoc continues the indented block on a line without a tab. */
    fputs(mutates(c) ? " ++\n_Changes the process; audited._\n\n" : "\n\n", out);
}

/* The type names a TYPE argument takes, then the commands. */
static void scdoc_format(FILE *out)
{
    fputs("_TYPE_ is one of", out);
    const char *names = hp_type_names();
    for (const char *p = names; *p;) {
        size_t len = strcspn(p, ", ");
        fprintf(out, "%s *%.*s*", p == names ? "" : ",", (int)len, p);
        p += len;
        p += strspn(p, ", ");
    }
    fputs(".\n\n", out);
    hp_for_each_command(scdoc_row, out);
}

/* ---- c: the table as static data ------------------------------------------------------------- */

static void put_c_string(const char *s, FILE *out)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            fprintf(out, "\\%03o", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void c_row(const struct hp_command *c, void *ctx)
{
    FILE *out = ctx;
    fputs("    {", out);
    put_c_string(c->family, out);
    fputs(", ", out);
    if (c->verb)
        put_c_string(c->verb, out);
    else
        fputs("NULL", out);
    fprintf(out, ", %d, %d, %d,\n     ", c->min_args, c->max_args, mutates(c));
    put_c_string(c->usage, out);
    fputs(",\n     ", out);
    put_c_string(c->summary, out);
    fputs("},\n", out);
}

static void c_format(FILE *out)
{
    fputs("/* hotpatch_commands.h — the agent's commands, generated by tools/hotpatch_commands.c\n"
          " * from the dispatch table at build time; do not edit. */\n"
          "#ifndef HOTPATCH_COMMAND_TABLE_H\n#define HOTPATCH_COMMAND_TABLE_H\n\n#include <stddef.h>\n\n"
          "struct hotpatch_command_info {\n"
          "    const char *family;\n"
          "    const char *verb;      /* NULL for a command of one word (help, version) */\n"
          "    int min_args, max_args; /* words after the family and verb */\n"
          "    int mutates;           /* 1: changes the process (audited) */\n"
          "    const char *usage;\n"
          "    const char *summary;\n"
          "};\n\n"
          "static const struct hotpatch_command_info hotpatch_commands[] = {\n", out);
    hp_for_each_command(c_row, out);
    fputs("};\n\n#define HOTPATCH_COMMAND_COUNT (sizeof hotpatch_commands / sizeof "
          "hotpatch_commands[0])\n\n#endif\n", out);
}

/* ---- bash: arrays for the completion script -------------------------------------------------- */

static void put_bash_word(const char *s, FILE *out)
{
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", out);
        else
            fputc(*s, out);
    }
}

static void bash_row(const struct hp_command *c, void *ctx)
{
    FILE *out = ctx;
    fputs("  '", out);
    put_bash_word(c->family, out);
    fputc('|', out);
    put_bash_word(c->verb ? c->verb : "", out);
    fputc('|', out);
    put_bash_word(arguments_of(c), out);
    fputs("'\n", out);
}

static void bash_format(FILE *out)
{
    fputs("# Generated by tools/hotpatch_commands.c from the agent's dispatch table.\n"
          "_hotpatch_commands=(\n", out);
    hp_for_each_command(bash_row, out);
    fputs(")\n_hotpatch_types=(", out);
    /* "bool, int, ..." becomes bool int ... */
    for (const char *p = hp_type_names(); *p; p++)
        if (*p != ',')
            fputc(*p, out);
    fputs(")\n", out);
}

/* ---- tsv ------------------------------------------------------------------------------------- */

static void tsv_row(const struct hp_command *c, void *ctx)
{
    fprintf(ctx, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", c->family, c->verb ? c->verb : "-",
            c->min_args, c->max_args, mutates(c), c->usage, c->summary);
}

static void text_format(FILE *out) { hp_for_each_command(text_row, out); }
static void tsv_format(FILE *out) { hp_for_each_command(tsv_row, out); }

static const struct {
    const char *name;
    void (*print)(FILE *out);
} formats[] = {
    {"text", text_format}, {"scdoc", scdoc_format}, {"c", c_format},
    {"bash", bash_format}, {"tsv", tsv_format},
};

int main(int argc, char **argv)
{
    size_t f = 0;
    while (argc >= 2 && f < HP_ARRAY_SIZE(formats) && strcmp(argv[1], formats[f].name) != 0)
        f++;
    if ((argc != 2 && argc != 3) || f == HP_ARRAY_SIZE(formats)) {
        fprintf(stderr, "usage: hotpatch_commands text|scdoc|c|bash|tsv [OUTPUT]\n");
        return 2;
    }
    FILE *out = argc == 3 ? fopen(argv[2], "w") : stdout;
    if (!out) {
        fprintf(stderr, "hotpatch_commands: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    formats[f].print(out);
    if (ferror(out) || (out != stdout ? fclose(out) : fflush(out)) != 0) {
        fprintf(stderr, "hotpatch_commands: cannot write %s\n", argc == 3 ? argv[2] : "stdout");
        return 1;
    }
    return 0;
}
