/* warns.c — the parent project's own code, built with -Wall and an unused variable: the warning
 * must be shown and stay a warning. Were hotpatch's -Werror in its libraries' usage
 * requirements, this would fail to build, which is what the subdirectory consumer test checks. */
int main(void)
{
    int unused;
    return 0;
}
