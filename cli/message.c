/*
 * message.c — the client's messages on stderr, the first one kept. See message.h for why.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "message.h"

static char first[MESSAGE_LIMIT];

void say(const char *fmt, ...)
{
    char text[MESSAGE_LIMIT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hotpatch: %s\n", text);
    if (first[0] == '\0') {
        snprintf(first, sizeof first, "%s", text);
        first[strcspn(first, "\n")] = '\0';
    }
}

const char *first_message(void)
{
    return first;
}

void forget_messages(void)
{
    first[0] = '\0';
}
