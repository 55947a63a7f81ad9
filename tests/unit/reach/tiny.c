/*
 * tiny.c — functions shorter than the 5-byte jump (issue 11, reach): at -O2 with
 * -fcf-protection, `return x * 2;` is endbr64, a 3-byte lea and ret, then alignment padding
 * (a 7- or 8-byte nopl) up to the next function. Patchable: the jump covers the body and the
 * first padding bytes, which nothing executes or branches to. Built with gcc by
 * build_shapes.sh.
 */
int twice(int x)
{
    return x * 2;
}

int thrice(int x)
{
    return x * 3;
}

int twice_repl(int x)
{
    return x * 20 + 1;
}
